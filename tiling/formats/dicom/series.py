"""DICOM sources on pydicom and highdicom: CT/MR series, enhanced multi-frame files, tiled slides.

Volumes are read as (z, y, x) with z along the slice normal, lowest position
first (see :mod:`tiling.formats.dicom.geometry`); ``read(window)`` takes a 3-axis
window and returns ``(data, valid)`` with data (1, dz, dy, dx) float32 after
RescaleSlope/Intercept (Hounsfield units for CT) and valid (dz, dy, dx) bool.
Only the slices a window touches are decoded, and a small LRU keeps recently
decoded slices, so memory is bounded by the window plus that cache.

Whole-slide images read as 2-D (rows, cols) images with one band per sample
(see :class:`~tiling.formats.dicom.frames.DicomSlideSource`).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import pixel_array

from tiling.core.windows import Window
from tiling.errors import ConfigError, SourceOpenError, SourceReadError
from tiling.formats.base import SourceBase
from tiling.formats.dicom import DicomOptions
from tiling.formats.dicom.frames import WSI_SOP_CLASS, DicomMultiframeSource, DicomSlideSource
from tiling.formats.dicom.geometry import (
    SPACING_TOLERANCE,
    DecoderMissingError,
    DicomHeaderError,
    DicomSeriesError,
    FrameCache,
    SlideGeometry,
    VolumeGeometry,
    check_orientation,
    check_spacing,
    header_int,
    header_numbers,
    read_slices,
    require_decoder,
    stack_order,
)

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "DecoderMissingError",
    "DicomHeaderError",
    "DicomMultiframeSource",
    "DicomSeriesError",
    "DicomSeriesSource",
    "DicomSlideSource",
    "SlideGeometry",
    "VolumeGeometry",
    "open_dicom",
]

log = logging.getLogger(__name__)

#: Decoded slices kept per source: enough for a few 512x512 float32 slices
#: that neighbouring tiles share, small next to a worker's memory.
DEFAULT_CACHE_BYTES = 32 * 2**20
#: Values larger than this are not read while scanning headers.
_DEFER_SIZE = "64 KB"
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


@dataclass(frozen=True)
class _SliceHeader:
    """What the series source keeps per file: no pixel data."""

    file: Path
    series_uid: str
    sop_uid: str
    sop_class: str
    study_uid: str
    frame_of_reference: str | None
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, ...] | None
    size: tuple[int, int]
    samples: int
    frames: int
    slope: float
    intercept: float
    transfer_syntax: str
    has_pixels: bool
    modality: str
    thickness: float | None
    problem: DicomHeaderError | None = None  # a malformed element, raised if this file's series is read


def _geometry_fields(ds: Dataset, path: Path) -> dict[str, Any]:
    """The numeric fields of a slice header, each parsed and checked.

    Raises:
        DicomHeaderError: naming the file and the first malformed element.
    """
    orientation = header_numbers(ds, "ImageOrientationPatient", path, count=6)
    if orientation is not None:
        check_orientation(orientation, path)
    spacing = header_numbers(ds, "PixelSpacing", path, count=2)
    if spacing is not None:
        check_spacing(spacing, path)
    slope = header_numbers(ds, "RescaleSlope", path, count=1)
    intercept = header_numbers(ds, "RescaleIntercept", path, count=1)
    thickness = header_numbers(ds, "SliceThickness", path, count=1)
    return dict(
        position=header_numbers(ds, "ImagePositionPatient", path, count=3),
        orientation=orientation,
        pixel_spacing=spacing,
        frames=header_int(ds, "NumberOfFrames", path, 1) or 1,
        slope=(slope[0] if slope else 1.0) or 1.0,
        intercept=intercept[0] if intercept else 0.0,
        thickness=thickness[0] if thickness and thickness[0] > 0 else None,
    )


def _read_header(path: Path) -> _SliceHeader | None:
    """The header of one file, or None when it is not a DICOM image file at all.

    A malformed numeric element does not stop the scan (the file may belong
    to a series that is not read); it is kept as ``problem`` and raised when
    the file's series is checked.
    """
    try:
        ds = pydicom.dcmread(path, defer_size=_DEFER_SIZE)
    except (InvalidDicomError, EOFError, IsADirectoryError, PermissionError):
        log.debug("skipping %s: not a DICOM file", path)
        return None
    meta = getattr(ds, "file_meta", None)
    if "SeriesInstanceUID" not in ds or ds.get("SOPClassUID") == _DICOMDIR_SOP_CLASS:
        log.debug("skipping %s: no SeriesInstanceUID (a DICOMDIR or not an instance)", path)
        return None
    ts = str(meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")) if meta is not None else "1.2.840.10008.1.2"
    problem = None
    try:
        fields = _geometry_fields(ds, path)
    except DicomHeaderError as e:
        problem = e
        fields = dict(position=None, orientation=None, pixel_spacing=None, frames=1, slope=1.0, intercept=0.0)
        fields["thickness"] = None
    return _SliceHeader(
        file=path,
        series_uid=str(ds.SeriesInstanceUID),
        sop_uid=str(ds.get("SOPInstanceUID", "")),
        sop_class=str(ds.get("SOPClassUID", "")),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        frame_of_reference=ds.get("FrameOfReferenceUID"),
        size=(int(ds.get("Rows", 0)), int(ds.get("Columns", 0))),
        samples=int(ds.get("SamplesPerPixel", 1)),
        transfer_syntax=ts,
        has_pixels=any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")),
        modality=str(ds.get("Modality", "?")),
        problem=problem,
        **fields,
    )


def _scan(path: Path) -> list[_SliceHeader]:
    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    headers = [h for h in map(_read_header, files) if h is not None]
    if not headers:
        raise SourceOpenError(f"{path}: no DICOM instances found; point to a folder of .dcm files of one series")
    return headers


def _pick_series(path: Path, headers: list[_SliceHeader], series_uid: str | None) -> list[_SliceHeader]:
    counts = Counter(h.series_uid for h in headers)
    modality = {h.series_uid: h.modality for h in headers}
    listing = "; ".join(f"{uid} ({modality[uid]}, {n} files)" for uid, n in sorted(counts.items()))
    if series_uid is not None:
        if series_uid not in counts:
            raise DicomSeriesError(f"{path}: no series {series_uid}; the folder holds {listing}")
        return [h for h in headers if h.series_uid == series_uid]
    if len(counts) > 1:
        raise DicomSeriesError(f"{path}: holds {len(counts)} series, pass series_uid= one of {listing}")
    return headers


def _check_slices(path: Path, slices: list[_SliceHeader]) -> None:
    """Every file must be a single-frame, single-sample image of the first file's geometry."""
    first = slices[0]
    for h in slices:
        if h.problem is not None:
            raise h.problem
        if not h.has_pixels:
            raise DicomSeriesError(
                f"{h.file}: has no pixel data (SOP class {h.sop_class}); remove it from {path} or pick another series"
            )
        if h.position is None or h.orientation is None or h.pixel_spacing is None:
            raise DicomSeriesError(
                f"{h.file}: lacks ImagePositionPatient, ImageOrientationPatient or PixelSpacing; "
                "it cannot be placed in a volume"
            )
        if h.frames != 1:
            raise DicomSeriesError(f"{h.file}: has {h.frames} frames; open a multi-frame file on its own")
        if h.samples != 1:
            raise DicomSeriesError(f"{h.file}: has {h.samples} samples per pixel; a CT/MR volume needs 1")
        if h.size != first.size:
            raise DicomSeriesError(
                f"{h.file}: is {h.size[0]}x{h.size[1]} pixels but {first.file.name} is "
                f"{first.size[0]}x{first.size[1]}; move the odd file out of {path} or pick another series"
            )
        if not np.allclose(np.asarray(h.orientation, float), np.asarray(first.orientation, float), atol=1e-4):
            raise DicomSeriesError(
                f"{h.file}: orientation {h.orientation} differs from {first.file.name}'s {first.orientation}; "
                "a volume needs one orientation"
            )
        if not np.allclose(np.asarray(h.pixel_spacing, float), np.asarray(first.pixel_spacing, float), rtol=1e-3):
            raise DicomSeriesError(
                f"{h.file}: pixel spacing {h.pixel_spacing} differs from {first.file.name}'s {first.pixel_spacing}"
            )
        require_decoder(h.file, h.transfer_syntax)


class DicomSeriesSource(SourceBase):
    """A folder of single-frame CT/MR files read as one (z, y, x) volume, slice by slice.

    Args:
        path: a folder (searched recursively; non-DICOM files are skipped) or
            a single image file (a one-slice volume).
        series_uid: the SeriesInstanceUID to read when the folder holds several.
        spacing_tolerance: allowed relative deviation of a slice step from the median step.
        cache_bytes: the cap on decoded slices kept between reads.

    Raises:
        SourceOpenError: if the path is missing or holds no DICOM files.
        DicomSeriesError: if the folder holds several series and none is
            chosen, a file has no pixel data, sizes or orientations differ,
            two slices share a position or the spacing has a gap.
        DecoderMissingError: if a file is compressed and no decoder is installed.
    """

    format = "dicom"
    count = 1
    dtype = np.dtype(np.float32)

    def __init__(
        self,
        path: str | Path,
        series_uid: str | None = None,
        spacing_tolerance: float = SPACING_TOLERANCE,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise SourceOpenError(f"{self.path}: no such file or folder")
        self.spacing_tolerance = spacing_tolerance
        slices = _pick_series(self.path, _scan(self.path), series_uid)
        _check_slices(self.path, slices)
        positions = np.array([h.position for h in slices])
        names = [h.file.name for h in slices]
        orientation = cast(tuple[float, ...], slices[0].orientation)  # checked by _check_slices
        order, step = stack_order(positions, orientation, names, self.path, spacing_tolerance)
        self._slices = [slices[i] for i in order]
        self.series_uid = self._slices[0].series_uid
        self.reference = self._geometry(step)
        self.shape = self.reference.shape
        self.options = DicomOptions(series=self.series_uid, spacing_tolerance=spacing_tolerance)
        self.block_shape = (1, *self.shape[1:])
        self._cache = FrameCache(self._decode, cache_bytes)

    def _geometry(self, step: float | None) -> VolumeGeometry:
        first = self._slices[0]
        if step is None:
            step = first.thickness or 1.0
        rows, cols = first.size
        return VolumeGeometry(
            shape=(len(self._slices), rows, cols),
            spacing=(step, first.pixel_spacing[0], first.pixel_spacing[1]),
            origin=tuple(first.position),
            orientation=tuple(first.orientation),
            frame_of_reference_uid=first.frame_of_reference,
            study_instance_uid=first.study_uid,
            series_instance_uid=first.series_uid,
            sop_class_uid=first.sop_class,
            sop_instance_uids=tuple(h.sop_uid for h in self._slices),
            files=tuple(str(h.file) for h in self._slices),
            frame_indices=(0,) * len(self._slices),
        )

    @property
    def frames_decoded(self) -> int:
        """How many slices have been decoded so far (a slice served from the cache does not count)."""
        return self._cache.decoded

    @property
    def files(self) -> tuple[Path, ...]:
        """Per z slice, its file."""
        return tuple(h.file for h in self._slices)

    def _decode(self, z: int) -> np.ndarray:
        h = self._slices[z]
        try:
            raw = pixel_array(h.file)
        except Exception as e:  # pydicom raises many types for corrupt or truncated data
            raise SourceReadError(f"{h.file}: cannot decode pixel data ({e}); the file may be corrupt") from e
        if raw.shape != h.size:
            raise SourceReadError(f"{h.file}: decoded to shape {raw.shape}, header says {h.size}")
        return raw.astype(np.float32) * np.float32(h.slope) + np.float32(h.intercept)

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read a (z, y, x) window, padding with 0 where it overruns the volume.

        Returns:
            data (1, dz, dy, dx) float32 in rescaled units (HU for CT), and
            valid (dz, dy, dx) bool, False outside the volume.

        Raises:
            WindowError: if the window does not have 3 axes.
            SourceReadError: if a slice cannot be decoded.
        """
        return read_slices(window, self.shape, self._cache, self.path)

    def close(self) -> None:
        """Drop cached slices (no file stays open between reads)."""
        self._cache.clear()

    def __repr__(self) -> str:
        return f"DicomSeriesSource({str(self.path)!r}, series_uid={self.series_uid!r}, shape={self.shape})"


def open_dicom(
    path: str | Path, series_uid: str | None = None, spacing_tolerance: float = SPACING_TOLERANCE
) -> DicomSeriesSource | DicomMultiframeSource | DicomSlideSource:
    """Open a DICOM folder or file with the right source.

    A folder is a series; a file is a slide (VL Whole Slide Microscopy), a
    multi-frame volume (NumberOfFrames > 1 or functional groups), or else a
    one-slice series.

    Args:
        path: the folder or file.
        series_uid: for a folder holding several series, the one to read.
        spacing_tolerance: allowed relative deviation of a slice step from the median.

    Raises:
        SourceOpenError: if the path is missing or not DICOM, and the errors
            of the chosen source.
        ConfigError: if a series is chosen for a single file.
    """
    path = Path(path)
    if path.is_dir():
        return DicomSeriesSource(path, series_uid=series_uid, spacing_tolerance=spacing_tolerance)
    if not path.exists():
        raise SourceOpenError(f"{path}: no such file or folder")
    if series_uid is not None:
        raise ConfigError(f"{path}: series applies to a folder of DICOM files only, and this is one file")
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, EOFError) as e:
        raise SourceOpenError(f"{path}: not a DICOM file ({e}); pass a .dcm file or a folder of them") from e
    if ds.get("SOPClassUID") == WSI_SOP_CLASS:
        return DicomSlideSource(path)
    if header_int(ds, "NumberOfFrames", path, 1) > 1 or "PerFrameFunctionalGroupsSequence" in ds:
        return DicomMultiframeSource(path, spacing_tolerance=spacing_tolerance)
    return DicomSeriesSource(path, spacing_tolerance=spacing_tolerance)
