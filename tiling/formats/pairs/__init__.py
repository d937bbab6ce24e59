"""A folder of image/mask tile pairs: ``images/NAME.ext`` with ``masks/NAME.ext``.

A dataset layout rather than a format of its own: each pair is a small
scene whose image and mask are opened through the registry like any other
(usually GeoTIFF or PNG through GDAL). A mask may also be called
``NAME_mask.ext`` or sit in ``labels/`` instead of ``masks/``.
"""

from __future__ import annotations

from pathlib import Path

from tiling.errors import SourceOpenError
from tiling.formats.base import Format

__all__ = ["FORMAT", "list_pairs"]

_IMAGES = "images"
_MASKS = ("masks", "labels")


def _mask_folder(path: Path) -> Path | None:
    return next((path / m for m in _MASKS if (path / m).is_dir()), None)


def _sniff(path: Path) -> bool:
    return path.is_dir() and (path / _IMAGES).is_dir() and _mask_folder(path) is not None


def list_pairs(path: Path) -> list[tuple[Path, Path]]:
    """Every ``(image, mask)`` pair under ``path``, sorted by name.

    Raises:
        SourceOpenError: if an image has no mask, or there is no image at all.
    """
    masks_dir = _mask_folder(path)
    images = sorted(p for p in (path / _IMAGES).iterdir() if p.is_file() and not p.name.startswith("."))
    if masks_dir is None or not images:
        raise SourceOpenError(f"{path}: no image/mask pairs (expected {_IMAGES}/ and masks/ with files of one name)")
    masks = {p.stem: p for p in masks_dir.iterdir() if p.is_file()}
    pairs = []
    for img in images:
        mask = masks.get(img.stem) or masks.get(f"{img.stem}_mask")
        if mask is None:
            raise SourceOpenError(f"{img}: has no mask; expected {masks_dir / img.name}")
        pairs.append((img, mask))
    return pairs


FORMAT = Format(name="pairs", title="image/mask tile pairs", sniff=_sniff, priority=5, scenes=list_pairs)
