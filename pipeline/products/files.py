"""Where the products go, the mark tilewise leaves in them, and the rule for replacing one.

Run planning takes the product paths from here to check them with the mask's.

A product path follows the mask's rule (:func:`pipeline.infer.plan.check_outputs`):
an existing file is replaced only with ``--overwrite``, and only when
tilewise wrote it. A GeoPackage carries the mark in its dataset metadata
(GDAL's ``gpkg_metadata``: ``TILEWISE=tilewise <version>``), a PNG in its
``Software`` text chunk.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tiling.errors import ConfigError, SinkError

if TYPE_CHECKING:  # the config imports models (torch); the paths need only its values
    from pipeline.config import PipelineConfig

__all__ = [
    "MARK_KEY",
    "check_product_path",
    "owns_product",
    "planned_products",
    "quicklook_path_for",
    "vector_path_for",
]

#: The metadata key (GeoPackage) and the text chunk value's prefix (PNG ``Software``) of tilewise's mark.
MARK_KEY = "TILEWISE"


def vector_path_for(mask: Path, vector: str | Path, batch: bool) -> Path:
    """Where the polygons of ``mask`` go: ``vector`` itself, or ``<vector>/<mask stem>.gpkg`` in a batch."""
    return Path(vector) / f"{mask.stem}.gpkg" if batch else Path(vector)


def quicklook_path_for(mask: str | Path) -> Path:
    """``<mask stem>.quicklook.png`` beside the mask (``m.ome.zarr`` -> ``m.quicklook.png``)."""
    mask = Path(mask)
    stem = mask.name.removesuffix(".zarr").removesuffix(".ome") if mask.suffix == ".zarr" else mask.stem
    return mask.with_name(f"{stem}.quicklook.png")


def planned_products(mask: Path, cfg: PipelineConfig, batch: bool) -> tuple[Path, ...]:
    """The paths of the products ``cfg.products`` asks for beside ``mask``: polygons, then the quicklook.

    A run checks them with the mask's outputs before any work
    (:func:`pipeline.infer.plan.check_outputs`).
    """
    p = cfg.products
    vector = (vector_path_for(mask, p.vector, batch),) if p.vector is not None else ()
    return vector + ((quicklook_path_for(mask),) if p.quicklook else ())


def _gpkg_is_ours(path: Path) -> bool:
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    try:
        meta = pyogrio.read_info(path, layer=0).get("dataset_metadata") or {}
    except (DataSourceError, DataLayerError, OSError):  # not a GeoPackage GDAL can open: not ours
        return False
    return str(meta.get(MARK_KEY, "")).startswith("tilewise")


def _png_is_ours(path: Path) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return str(getattr(im, "text", {}).get("Software", "")).startswith("tilewise")
    except (OSError, UnidentifiedImageError):
        return False


def owns_product(path: Path) -> bool:
    """Whether ``path`` is a product tilewise wrote: a GeoPackage or PNG carrying its mark."""
    if path.is_symlink() or not path.is_file():
        return False
    suffix = path.suffix.lower()
    if suffix == ".gpkg":
        return _gpkg_is_ours(path)
    if suffix == ".png":
        return _png_is_ours(path)
    return False


def check_product_path(path: Path, overwrite: bool) -> None:
    """Refuse to write a product over an existing path, unless ``overwrite`` and tilewise wrote it.

    Raises:
        ConfigError: if ``path`` exists and ``overwrite`` is off.
        SinkError: if ``path`` exists and tilewise did not write it (never replaced).
    """
    if not (path.exists() or path.is_symlink()):
        return
    if not overwrite:
        raise ConfigError(f"{path}: exists; pass --overwrite to replace it")
    if not owns_product(path):
        raise SinkError(
            f"{path}: exists and was not written by tilewise, so it is never replaced; "
            "move it away or choose another path"
        )
