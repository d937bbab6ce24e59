"""A Zarr label array, or the ``labels`` group of an OME-Zarr image, as the labels of an image.

OME-Zarr keeps label images inside the image store: ``image.zarr/labels/``
lists them (``{"labels": ["cells", ...]}``) and each is a multiscale image
of its own with ``image-label`` metadata. Given the image store, the first
listed label image (or the one named ``name``) is read at the image's level;
given a label image or a plain array, that is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

from tiling.core.windows import Window
from tiling.errors import SourceOpenError
from tiling.formats.base import Source, SourceBase, check_label_shape
from tiling.formats.zarr import ZarrLabelOptions
from tiling.formats.zarr.reader import ZarrSource, read_multiscales

__all__ = ["ZarrLabels", "label_image_path"]


def label_image_path(path: Path, name: str | None) -> Path:
    """The label image ``path`` stands for: ``path/labels/<name>`` when ``path`` holds a labels group."""
    try:
        group = zarr.open_group(str(path), mode="r")
    except (FileNotFoundError, ValueError, TypeError, zarr.errors.NodeTypeValidationError):
        return path  # a plain array: ZarrSource reports what is wrong with it
    if "labels" not in group:
        if name is not None:
            raise SourceOpenError(f"{path}: has no labels group, so no label image {name!r}")
        return path
    labels: Any = group["labels"]
    attrs: dict[str, Any] = dict(labels.attrs)
    meta: Any = attrs.get("ome") or attrs
    listed = [str(n) for n in (meta.get("labels") or sorted(labels.group_keys()))]
    if not listed:
        raise SourceOpenError(f"{path}: its labels group lists no label image")
    chosen = name if name is not None else listed[0]
    if chosen not in listed:
        raise SourceOpenError(f"{path}: has no label image {chosen!r}; it has {', '.join(listed)}")
    return path / "labels" / chosen


class ZarrLabels(SourceBase):
    """A one-channel Zarr array on the image's pixel grid.

    Args:
        path: the image store (with a ``labels`` group), a label image, or a plain array.
        image: the image source the labels belong to.
        options: which label image and level.

    Raises:
        SourceOpenError: if no label array is found.
        ConfigError: if it has more than one channel or another shape.
    """

    format = "zarr"

    def __init__(self, path: str | Path, image: Source, options: ZarrLabelOptions) -> None:
        self.path = Path(path)
        self.options = options
        target = label_image_path(self.path, options.name)
        level = options.level
        if level is None and target != self.path:  # a label image in the image's store: the image's level
            level = getattr(image.options, "level", None)
        node = zarr.open(str(target), mode="r")
        if isinstance(node, zarr.Group) and read_multiscales(node) is None and level is not None:
            level = None
        self._src = ZarrSource(target, level=level, array=options.array)
        check_label_shape(self.path, self._src.shape, self._src.count, image)
        self.shape = self._src.shape
        self.count = 1
        self.dtype = np.dtype(self._src.dtype)
        self.block_shape = self._src.block_shape
        self.reference = image.reference

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Labels (1, *window.shape) and valid (*window.shape)."""
        return self._src.read(window)

    def close(self) -> None:
        """Close the store."""
        self._src.close()
