"""A DICOM SEG as the labels of the DICOM series it segments.

Frames are matched to the image's slices through the SOP Instance UIDs they
reference (highdicom's ``get_pixels_by_source_instance``), never through
positions or file order: the series' ``VolumeGeometry`` knows which instance
each slice came from. A slice no frame references is background (a SEG
omits empty frames). Segment k is class k; 0 is background.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.errors import InvalidDicomError

from tiling.core.windows import Window
from tiling.errors import ConfigError, SourceOpenError
from tiling.formats.base import NoOptions, Source, SourceBase, empty_read
from tiling.formats.dicom.geometry import check_window_ndim
from tiling.formats.reference import VolumeGeometry

__all__ = ["DicomSegLabels"]

_CACHE_SLICES = 8


class DicomSegLabels(SourceBase):
    """Segment numbers per voxel of a (z, y, x) DICOM series.

    Args:
        path: the SEG file (BINARY or LABELMAP).
        image: the series it references (a source with a :class:`VolumeGeometry`).

    Raises:
        SourceOpenError: if the file is not a readable SEG.
        ConfigError: if the image is no DICOM volume, the SEG references none
            of its instances, or it is FRACTIONAL.
    """

    format = "dicom"

    def __init__(self, path: str | Path, image: Source) -> None:
        self.path = Path(path)
        geo = image.reference
        if not isinstance(geo, VolumeGeometry):
            raise ConfigError(f"{self.path}: a DICOM SEG labels a DICOM series; {image.path} is not one")
        try:
            self._seg = hd.seg.segread(self.path)
        except (InvalidDicomError, ValueError, AttributeError, OSError) as e:
            raise SourceOpenError(f"{self.path}: not a readable DICOM SEG ({str(e).splitlines()[0]})") from e
        kind = str(self._seg.SegmentationType)
        if kind == "FRACTIONAL":
            raise ConfigError(
                f"{self.path}: a FRACTIONAL SEG holds probabilities, not labels; pass a BINARY or LABELMAP SEG"
            )
        referenced = {uid for _, _, uid in self._seg.get_source_image_uids()}
        self._uids = geo.sop_instance_uids
        if not referenced & set(self._uids):
            raise ConfigError(
                f"{self.path}: references none of the {len(self._uids)} instances of series "
                f"{geo.series_instance_uid} ({image.path}); it segments another series"
            )
        self._framed = {uid for uid in self._uids if uid in referenced}
        self.shape = tuple(geo.shape)
        self.count = 1
        self.dtype = np.dtype(np.uint8)
        self.block_shape = (1, *geo.shape[1:])
        self.reference = geo
        self.options = NoOptions()
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def _slice(self, z: int) -> np.ndarray:
        """Segment numbers (rows, cols) of slice ``z``."""
        hit = self._cache.get(z)
        if hit is not None:
            self._cache.move_to_end(z)
            return hit
        uid = self._uids[z]
        if uid not in self._framed:
            out = np.zeros(self.shape[1:], np.uint8)
        else:
            px = self._seg.get_pixels_by_source_instance(
                [uid], combine_segments=True, skip_overlap_checks=True, ignore_spatial_locations=True, dtype=np.uint8
            )  # fmt: skip
            out = np.asarray(px[0], np.uint8)
        self._cache[z] = out
        if len(self._cache) > _CACHE_SLICES:
            self._cache.popitem(last=False)
        return out

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Labels (1, *window.shape) and valid (*window.shape), padded past the edge."""
        check_window_ndim(window, 3, self.path)
        data, valid, inside = empty_read(window, self.shape, 1, self.dtype)
        if inside is None:
            return data, valid
        rel = inside.relative_to(window)
        for dz in range(inside.shape[0]):
            z = inside.start[0] + dz
            plane = self._slice(z)[inside.start[1] : inside.stop[1], inside.start[2] : inside.stop[2]]
            data[0, rel.start[0] + dz, rel.start[1] : rel.stop[1], rel.start[2] : rel.stop[2]] = plane
        valid[rel.to_slices()] = True
        return data, valid
