"""Label constants and the class palette shared by every mask writer.

One place for what a label value means, so the COG colour table, the
OME-Zarr ``image-label`` colours and the DICOM SEG segment colours agree.
"""

from __future__ import annotations

__all__ = ["LABEL_NODATA", "PALETTE", "class_color", "default_colormap", "default_names"]

#: Label written where no valid pixel contributed (source nodata, padding).
LABEL_NODATA = 255

#: Distinct colours for the first classes (matplotlib's tab10).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip


def class_color(k: int) -> tuple[int, int, int]:
    """RGB of class ``k``: tab10 for the first ten, then a deterministic hash."""
    if k < len(PALETTE):
        return PALETTE[k]
    return ((k * 97) % 256, (k * 57) % 256, (k * 151) % 256)


def default_colormap(classes: int) -> dict[int, tuple[int, int, int, int]]:
    """RGBA per class value, and transparent black for :data:`LABEL_NODATA`."""
    cmap: dict[int, tuple[int, int, int, int]] = {k: (*class_color(k), 255) for k in range(classes)}
    cmap[LABEL_NODATA] = (0, 0, 0, 0)
    return cmap


def default_names(classes: int) -> list[str]:
    """``class_0``, ``class_1``, ... for runs that name no classes."""
    return [f"class_{k}" for k in range(classes)]
