"""What analysts open besides the mask, made from a finished run: polygons for GIS and quicklook PNGs.

Both read the published mask back window by window (and the probabilities
when saved), so they never touch the stitcher, and are available from
Python: :func:`polygonize` and :func:`quicklook`.
"""

from __future__ import annotations

from pipeline.products.files import planned_products, quicklook_path_for, vector_path_for
from pipeline.products.make import Products, check_products, make_products
from pipeline.products.quicklook import quicklook
from pipeline.products.vector import VectorResult, polygonize

__all__ = [
    "Products",
    "VectorResult",
    "check_products",
    "make_products",
    "planned_products",
    "polygonize",
    "quicklook",
    "quicklook_path_for",
    "vector_path_for",
]
