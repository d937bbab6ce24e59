"""The mark tilewise leaves in the products it writes, and the rule for replacing one.

A product path follows the mask's rule (:func:`pipeline.infer.plan.check_outputs`):
an existing file is replaced only with ``--overwrite``, and only when
tilewise wrote it. A GeoPackage carries the mark in its dataset metadata
(GDAL's ``gpkg_metadata``: ``TILEWISE=tilewise <version>``), a PNG in its
``Software`` text chunk.
"""

from __future__ import annotations

from pathlib import Path

from tiling.errors import ConfigError, SinkError

__all__ = ["MARK_KEY", "check_product_path", "owns_product"]

#: The metadata key (GeoPackage) and the text chunk value's prefix (PNG ``Software``) of tilewise's mark.
MARK_KEY = "TILEWISE"


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
