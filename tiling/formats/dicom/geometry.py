"""DICOM geometry and checks shared by the DICOM sources and the SEG sink.

Patient coordinates are DICOM's LPS, in millimetres. A volume's array axes
are (z, y, x): z runs along the slice normal (the cross product of the two
ImageOrientationPatient direction cosines) from the lowest position to the
highest, y down the rows of a slice and x along its columns.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from tiling.core.windows import Window
from tiling.errors import SourceOpenError, WindowError
from tiling.formats.base import empty_read
from tiling.formats.dicom import SPACING_TOLERANCE
from tiling.formats.reference import SlideGeometry, VolumeGeometry, slice_normal

__all__ = [
    "DUPLICATE_TOLERANCE_MM",
    "SPACING_TOLERANCE",
    "DecoderMissingError",
    "DicomHeaderError",
    "DicomSeriesError",
    "FrameCache",
    "SlideGeometry",
    "VolumeGeometry",
    "check_orientation",
    "check_spacing",
    "check_window_ndim",
    "header_int",
    "header_numbers",
    "read_slices",
    "require_decoder",
    "slice_normal",
    "stack_order",
]

#: Two slices closer than this along the normal are the same position (mm).
DUPLICATE_TOLERANCE_MM = 1e-3

#: What to ``pip install`` to decode each compressed transfer syntax.
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg pylibjpeg-libjpeg (or Pillow)",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg pylibjpeg-libjpeg",  # JPEG extended 12-bit
    "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg",  # JPEG lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": "pyjpegls (or pylibjpeg pylibjpeg-libjpeg)",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "pyjpegls (or pylibjpeg pylibjpeg-libjpeg)",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle",  # RLE (pydicom also decodes it natively)
}


class DicomSeriesError(SourceOpenError):
    """A DICOM series or stack is not one regular volume (sizes, gaps, duplicates, several series)."""


class DicomHeaderError(SourceOpenError):
    """A header element does not parse as numbers, or gives geometry no image can have."""


class DecoderMissingError(SourceOpenError):
    """The pixel data is compressed with a transfer syntax no installed plugin decodes."""


#: How far direction cosines may stray from unit length and from perpendicular:
#: headers round them to ~6 decimals, 1 % is far beyond rounding.
_COSINE_TOLERANCE = 0.01


def _shown(value: Any) -> str:
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(str(v) for v in value)
    return str(value)


def header_numbers(
    ds: Dataset, keyword: str, path: Path | str, where: str = "", count: int | None = None
) -> tuple[float, ...] | None:
    """The finite numbers element ``keyword`` of ``ds`` holds, or None when it is absent or empty.

    Args:
        ds: the dataset or sequence item holding the element.
        keyword: the element's keyword (``RescaleSlope``).
        path: the file, for messages.
        where: where in the file, for messages (``"frame 3 "``), with a trailing space.
        count: how many values it must hold, if fixed.

    Raises:
        DicomHeaderError: naming the file and the element, if a value does
            not parse as a number, the count is wrong, or a value is NaN or infinite.
    """
    try:
        value = ds.get(keyword)
    except Exception as e:  # pydicom converts on access and raises many types for malformed values
        raise DicomHeaderError(f"{path}: {where}{keyword} does not parse ({e}); the header is malformed") from e
    if value is None or value == "" or (isinstance(value, (MultiValue, list, tuple)) and len(value) == 0):
        return None
    items = value if isinstance(value, (MultiValue, list, tuple)) else [value]
    try:
        numbers = tuple(float(v) for v in items)
    except (TypeError, ValueError) as e:
        raise DicomHeaderError(
            f"{path}: {where}{keyword} is '{_shown(value)}', not a number; the header is malformed "
            "(correct it, e.g. with dcmodify, or leave the file out)"
        ) from e
    if count is not None and len(numbers) != count:
        raise DicomHeaderError(
            f"{path}: {where}{keyword} is '{_shown(value)}', {len(numbers)} value(s) where DICOM has {count}; "
            "the header is malformed"
        )
    if not all(np.isfinite(numbers)):
        raise DicomHeaderError(
            f"{path}: {where}{keyword} is '{_shown(value)}', not finite; the image cannot be placed or scaled "
            "(correct the header or leave the file out)"
        )
    return numbers


def header_int(ds: Dataset, keyword: str, path: Path | str, default: int, where: str = "") -> int:
    """Integer element ``keyword`` (``NumberOfFrames``), ``default`` when absent or empty.

    Raises:
        DicomHeaderError: if it does not parse as one whole number.
    """
    numbers = header_numbers(ds, keyword, path, where, count=1)
    if numbers is None:
        return default
    if numbers[0] != int(numbers[0]):
        raise DicomHeaderError(f"{path}: {where}{keyword} is {numbers[0]}, not a whole number")
    return int(numbers[0])


def check_orientation(
    orientation: Sequence[float], path: Path | str, keyword: str = "ImageOrientationPatient", where: str = ""
) -> None:
    """Refuse direction cosines that define no plane: zero, not unit length, parallel or not perpendicular.

    Raises:
        DicomHeaderError: naming the file, the element and the values.
    """
    o = np.asarray(orientation, float)
    shown = "\\".join(f"{v:g}" for v in o)
    row, col = o[:3], o[3:]
    lengths = np.linalg.norm(row), np.linalg.norm(col)
    if min(lengths) < 1e-6:
        problem = "has a zero direction vector"
    elif max(abs(n - 1) for n in lengths) > _COSINE_TOLERANCE:
        problem = f"has direction vectors of length {lengths[0]:.3g} and {lengths[1]:.3g}, not unit vectors"
    else:
        cos = abs(float(row @ col) / (lengths[0] * lengths[1]))
        if cos <= _COSINE_TOLERANCE:
            return
        angle = float(np.degrees(np.arccos(min(cos, 1.0))))
        problem = (
            "has parallel row and column directions"
            if angle < 0.01
            else f"has row and column directions {angle:.2f} degrees apart, not perpendicular"
        )
    raise DicomHeaderError(
        f"{path}: {where}{keyword} {shown} {problem}, so the image plane is undefined; the header is malformed"
    )


def check_spacing(spacing: Sequence[float], path: Path | str, keyword: str = "PixelSpacing", where: str = "") -> None:
    """Refuse a zero or negative pixel spacing.

    Raises:
        DicomHeaderError: naming the file, the element and the values.
    """
    if min(spacing) <= 0:
        shown = "\\".join(f"{v:g}" for v in spacing)
        raise DicomHeaderError(f"{path}: {where}{keyword} {shown} is not positive; a pixel spacing is a size in mm")


def stack_order(
    positions: np.ndarray,
    orientation: Sequence[float],
    names: Sequence[str],
    where: Path,
    tolerance: float = SPACING_TOLERANCE,
) -> tuple[np.ndarray, float | None]:
    """Order slices along their normal and check that they are evenly spaced.

    Args:
        positions: (n, 3) ImagePositionPatient of each slice, LPS mm.
        orientation: the stack's ImageOrientationPatient.
        names: per slice, how to name it in errors (a file, or a frame).
        where: the folder or file named in errors.
        tolerance: allowed relative deviation of a step from the median step.

    Returns:
        The permutation that sorts the slices (lowest position first), and
        the slice step in mm (None for a single slice).

    Raises:
        DicomSeriesError: if two slices share a position, or a step deviates
            from the median step (a missing slice, or two stacks mixed).
    """
    dist = np.asarray(positions, float) @ slice_normal(orientation)
    order = np.argsort(dist, kind="stable")
    if len(order) < 2:
        return order, None
    d = dist[order]
    steps = np.diff(d)
    dup = np.flatnonzero(steps < DUPLICATE_TOLERANCE_MM)
    if dup.size:
        i = int(dup[0])
        raise DicomSeriesError(
            f"{where}: {names[order[i]]} and {names[order[i + 1]]} lie at the same position "
            f"({d[i]:.3f} mm along the slice normal); remove the duplicate slice"
        )
    step = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - step) > tolerance * step)
    if bad.size:
        i = int(bad[0])
        raise DicomSeriesError(
            f"{where}: slices are not evenly spaced, a gap of {steps[i]:.3f} mm (expected {step:.3f} mm) "
            f"between slice {i} {names[order[i]]} at {d[i]:.3f} mm and slice {i + 1} "
            f"{names[order[i + 1]]} at {d[i + 1]:.3f} mm; a slice is missing or two stacks are mixed"
        )
    return order, step


def require_decoder(path: Path | str, transfer_syntax: str) -> None:
    """Check that pydicom has a plugin installed for ``transfer_syntax``.

    Raises:
        DecoderMissingError: naming the file, the syntax and what to pip install.
    """
    uid = UID(str(transfer_syntax))
    if not uid.is_encapsulated:
        return
    try:
        decoder = get_decoder(uid)
    except NotImplementedError as e:
        raise DecoderMissingError(
            f"{path}: pixel data is compressed as {uid.name} ({uid}), which pydicom cannot decode; "
            "convert the file to an uncompressed transfer syntax (e.g. gdcmconv --raw)"
        ) from e
    if not decoder.is_available:
        package = _DECODER_PACKAGES.get(str(uid), "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg")
        raise DecoderMissingError(
            f"{path}: pixel data is compressed as {uid.name} ({uid}) and no decoder for it is "
            f"installed; pip install {package}"
        )


def check_window_ndim(window: Window, ndim: int, path: Path) -> None:
    """Raise WindowError unless ``window`` has ``ndim`` axes."""
    if window.ndim != ndim:
        axes = "(z, y, x)" if ndim == 3 else "(rows, cols)"
        raise WindowError(f"{path}: needs a {ndim}-axis window {axes}, got {window.ndim} axes {window}")


class FrameCache:
    """A small LRU of decoded frames, bounded in bytes.

    Tiles of a sliding window overlap and several tiles share a slice or a
    slide tile; keeping the last few decoded frames avoids decoding them
    again. At least one frame is always kept.

    Args:
        load: decodes frame ``key``.
        max_bytes: the cap on the decoded frames held.
    """

    def __init__(self, load: Callable[[int], np.ndarray], max_bytes: int) -> None:
        self._load = load
        self.max_bytes = max_bytes
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self.decoded = 0

    def get(self, key: int) -> np.ndarray:
        """Frame ``key``, decoded now or taken from the cache."""
        frame = self._frames.get(key)
        if frame is not None:
            self._frames.move_to_end(key)
            return frame
        frame = self._load(key)
        self.decoded += 1
        self._frames[key] = frame
        used = sum(f.nbytes for f in self._frames.values())
        while used > self.max_bytes and len(self._frames) > 1:
            _, old = self._frames.popitem(last=False)
            used -= old.nbytes
        return frame

    def clear(self) -> None:
        """Drop every cached frame."""
        self._frames.clear()


def read_slices(window: Window, shape: tuple[int, ...], cache: FrameCache, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a (z, y, x) window of a volume whose z slices come from ``cache``.

    Returns data (1, dz, dy, dx) float32, zero-padded where the window
    overruns the volume, and valid (dz, dy, dx) bool. Only the slices the
    window touches are decoded.

    Raises:
        WindowError: if the window does not have 3 axes.
    """
    check_window_ndim(window, 3, path)
    data, valid, inside = empty_read(window, shape, 1, np.float32)
    if inside is None:
        return data, valid
    rel = inside.relative_to(window).to_slices()
    _, ys, xs = inside.to_slices()
    for k, z in enumerate(range(inside.start[0], inside.stop[0])):
        data[0, rel[0].start + k, rel[1], rel[2]] = cache.get(z)[ys, xs]
    valid[rel] = True
    return data, valid
