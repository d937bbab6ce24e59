"""DICOM sources whose frames live in one file: enhanced multi-frame volumes and tiled slides.

Both open the file with ``highdicom.imread(..., lazy_frame_retrieval=True)``,
which reads the metadata and a frame offset table but no pixels; each
``read`` then decodes only the frames the window touches.
"""

from __future__ import annotations

import logging
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from tiling.core.windows import Window, intersection
from tiling.errors import SourceOpenError, SourceReadError
from tiling.formats.base import SourceBase, empty_read
from tiling.formats.dicom import DicomOptions
from tiling.formats.dicom.geometry import (
    SPACING_TOLERANCE,
    DicomHeaderError,
    DicomSeriesError,
    FrameCache,
    SlideGeometry,
    VolumeGeometry,
    check_orientation,
    check_spacing,
    check_window_ndim,
    header_int,
    header_numbers,
    read_slices,
    require_decoder,
    stack_order,
)

__all__ = ["WSI_SOP_CLASS", "DicomMultiframeSource", "DicomSlideSource"]

log = logging.getLogger(__name__)

#: VL Whole Slide Microscopy Image Storage.
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
#: Decoded frames kept per source (see DicomSeriesSource).
_CACHE_BYTES = 32 * 2**20


def _check_frame_claim(header: Dataset, path: Path) -> int:
    """The frame count, after checking that the file is large enough to hold that many frames.

    highdicom indexes every frame when it opens a file, so a header claiming
    a billion frames would hang there; a frame needs at least its pixels
    (uncompressed) or an 8-byte item header (compressed).

    Raises:
        DicomHeaderError: if NumberOfFrames does not parse, is below 1, or the file is too small.
    """
    frames = header_int(header, "NumberOfFrames", path, 1)
    if frames < 1:
        raise DicomHeaderError(f"{path}: NumberOfFrames is {frames}; an image has at least one frame")
    rows, cols = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
    if rows < 1 or cols < 1:
        raise DicomHeaderError(f"{path}: Rows x Columns is {rows} x {cols}; a frame has at least one pixel")
    if UID(str(header.file_meta.TransferSyntaxUID)).is_encapsulated:
        need = 8 * frames
    else:
        samples, bits = int(header.get("SamplesPerPixel", 1) or 1), int(header.get("BitsAllocated", 8) or 8)
        need = frames * rows * cols * samples * bits // 8
    size = path.stat().st_size
    if need > size:
        raise DicomHeaderError(
            f"{path}: claims {frames:,} frames of {rows} x {cols} pixels, which take at least {need:,} bytes, "
            f"but the file has {size:,}; it is truncated or its header is wrong"
        )
    return frames


def _read_header(path: Path) -> Dataset:
    """The header of ``path`` (large values deferred), after checking it has pixels we can decode.

    The sources check their geometry on this header before highdicom opens
    the file: highdicom indexes every frame's position at open and fails
    deep inside for a NaN.
    """
    if not path.is_file():
        raise SourceOpenError(f"{path}: no such file")
    try:
        header = pydicom.dcmread(path, defer_size="64 KB")
    except (InvalidDicomError, EOFError) as e:
        raise SourceOpenError(f"{path}: not a DICOM file ({e}); pass a .dcm file") from e
    if not any(k in header for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DicomSeriesError(f"{path}: has no pixel data (SOP class {header.get('SOPClassUID')}); pass an image file")
    require_decoder(path, header.file_meta.TransferSyntaxUID)
    _check_frame_claim(header, path)
    return header


def _imread(path: Path) -> hd.Image:
    """Open ``path`` for lazy frame reads (its header was checked by :func:`_read_header`)."""
    try:
        return hd.imread(path, lazy_frame_retrieval=True)
    except Exception as e:  # highdicom parses every frame's metadata and raises many types
        raise SourceOpenError(f"{path}: not a DICOM image highdicom can read ({type(e).__name__}: {e})") from e


def _functional_item(ds: Dataset, index: int, sequence: str) -> Dataset | None:
    """Item of functional group ``sequence`` for frame ``index``: per-frame, else shared."""
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per is not None and index < len(per) and sequence in per[index]:
        return per[index][sequence][0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and sequence in shared[0]:
        return shared[0][sequence][0]
    return None


def _frame_planes(ds: Dataset, path: Path, frames: int) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """Per-frame positions (frames, 3), the common orientation (6,) and pixel spacing (2,).

    Raises:
        DicomSeriesError: if a frame lacks a position, orientation or spacing,
            or frames differ in orientation or spacing.
        DicomHeaderError: if a frame's position, orientation, spacing or
            rescale does not parse, is not finite, or is degenerate.
    """
    positions, orientations, spacings = [], [], []
    for i in range(frames):
        pos = _functional_item(ds, i, "PlanePositionSequence")
        ori = _functional_item(ds, i, "PlaneOrientationSequence")
        meas = _functional_item(ds, i, "PixelMeasuresSequence")
        where = f"frame {i + 1} "
        position = header_numbers(pos, "ImagePositionPatient", path, where, 3) if pos is not None else None
        orientation = header_numbers(ori, "ImageOrientationPatient", path, where, 6) if ori is not None else None
        spacing = header_numbers(meas, "PixelSpacing", path, where, 2) if meas is not None else None
        if position is None or orientation is None or spacing is None:
            raise DicomSeriesError(
                f"{path}: frame {i + 1} has no plane position, orientation or pixel spacing in its "
                "functional groups; the frames cannot be placed in a volume"
            )
        check_orientation(orientation, path, where=where)
        check_spacing(spacing, path, where=where)
        _check_rescale(ds, i, path)
        positions.append(list(position))
        orientations.append(orientation)
        spacings.append(spacing)
    for i, (o, s) in enumerate(zip(orientations, spacings)):
        if not np.allclose(o, orientations[0], atol=1e-4) or not np.allclose(s, spacings[0], rtol=1e-3):
            raise DicomSeriesError(
                f"{path}: frame {i + 1} has orientation {o} / spacing {s}, frame 1 has "
                f"{orientations[0]} / {spacings[0]}; a volume needs one of each"
            )
    return np.array(positions), orientations[0], spacings[0]


def _check_rescale(ds: Dataset, index: int, path: Path) -> None:
    """Frame ``index``'s RescaleSlope and RescaleIntercept (functional group, else top level) must be finite numbers.

    Raises:
        DicomHeaderError: naming the frame and the element.
    """
    item = _functional_item(ds, index, "PixelValueTransformationSequence")
    where = f"frame {index + 1} PixelValueTransformationSequence " if item is not None else ""
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        header_numbers(item if item is not None else ds, keyword, path, where, 1)


class DicomMultiframeSource(SourceBase):
    """An enhanced (multi-frame) CT/MR file read as a (z, y, x) volume, frame by frame.

    Frames are ordered along the slice normal from their per-frame
    PlanePositionSequence; intensities get the per-frame RescaleSlope and
    Intercept (PixelValueTransformationSequence), not the real-world value
    map, VOI or palette.

    Args:
        path: the file.
        spacing_tolerance: allowed relative deviation of a frame step from the median step.
        cache_bytes: the cap on decoded frames kept between reads.

    Raises:
        SourceOpenError: if the file is missing or not a DICOM image.
        DicomSeriesError: if frames lack geometry, share a position or are unevenly spaced.
        DecoderMissingError: if the file is compressed and no decoder is installed.
    """

    format = "dicom"
    count = 1
    dtype = np.dtype(np.float32)

    def __init__(
        self, path: str | Path, spacing_tolerance: float = SPACING_TOLERANCE, cache_bytes: int = _CACHE_BYTES
    ) -> None:
        self.path = Path(path)
        self.spacing_tolerance = spacing_tolerance
        ds = _read_header(self.path)
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            raise DicomSeriesError(f"{self.path}: has {ds.SamplesPerPixel} samples per pixel; a volume needs 1")
        frames = header_int(ds, "NumberOfFrames", self.path, 1)
        positions, orientation, pixel_spacing = _frame_planes(ds, self.path, frames)
        names = [f"frame {i + 1}" for i in range(frames)]
        order, step = stack_order(positions, orientation, names, self.path, spacing_tolerance)
        if step is None:
            measures = _functional_item(ds, 0, "PixelMeasuresSequence")
            thick = header_numbers(measures, "SliceThickness", self.path, "frame 1 ", 1) if measures else None
            step = thick[0] if thick and thick[0] > 0 else 1.0
        self._frames = [int(i) for i in order]
        self.options = DicomOptions(spacing_tolerance=spacing_tolerance)
        self.reference = VolumeGeometry(
            shape=(frames, int(ds.Rows), int(ds.Columns)),
            spacing=(step, *pixel_spacing),
            origin=tuple(float(v) for v in positions[order[0]]),
            orientation=orientation,
            frame_of_reference_uid=ds.get("FrameOfReferenceUID"),
            study_instance_uid=str(ds.StudyInstanceUID),
            series_instance_uid=str(ds.SeriesInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            sop_instance_uids=(str(ds.SOPInstanceUID),) * frames,
            files=(str(self.path),) * frames,
            frame_indices=tuple(self._frames),
        )
        self.shape = self.reference.shape
        self.block_shape = (1, *self.shape[1:])
        self._image = _imread(self.path)
        self._cache = FrameCache(self._decode, cache_bytes)

    @property
    def frames_decoded(self) -> int:
        """How many frames have been decoded so far (a frame served from the cache does not count)."""
        return self._cache.decoded

    def _decode(self, z: int) -> np.ndarray:
        try:
            return self._image.get_frame(
                self._frames[z], as_index=True, dtype=np.float32,
                apply_real_world_transform=False, apply_modality_transform=True,
                apply_voi_transform=False, apply_palette_color_lut=False, apply_icc_profile=False,
            )  # fmt: skip
        except Exception as e:  # decoders raise many types for corrupt data
            raise SourceReadError(f"{self.path}: cannot decode frame {self._frames[z] + 1} ({e})") from e

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read a (z, y, x) window: data (1, dz, dy, dx) float32, valid (dz, dy, dx) bool.

        Raises:
            WindowError: if the window does not have 3 axes.
            SourceReadError: if a frame cannot be decoded.
        """
        return read_slices(window, self.shape, self._cache, self.path)

    def close(self) -> None:
        """Drop cached frames (highdicom reopens the file per read)."""
        self._cache.clear()

    def __repr__(self) -> str:
        return f"DicomMultiframeSource({str(self.path)!r}, shape={self.shape})"


class _TiledFull:
    """The frame of each tile of a TILED_FULL image, computed rather than stored.

    TILED_FULL orders frames column fastest, then row, then focal plane, then
    optical path, so the first plane's tile (r, c) is frame ``r * cols + c``.
    """

    def __init__(self, grid: tuple[int, int], frames: int) -> None:
        self.grid = grid
        self.frames = frames

    def get(self, key: tuple[int, int]) -> int | None:
        """The 0-based frame of tile ``key`` (row, col), or None where there is none."""
        r, c = key
        i = r * self.grid[1] + c
        return i if 0 <= r < self.grid[0] and 0 <= c < self.grid[1] and i < self.frames else None


def _tile_index(
    ds: Dataset, path: Path, tile: tuple[int, int], grid: tuple[int, int]
) -> dict[tuple[int, int], int] | _TiledFull:
    """Map (tile row, tile col) to the 0-based frame holding it, first focal plane and optical path.

    Raises:
        SourceOpenError: if a frame's position is missing or off the tile grid.
    """
    frames = header_int(ds, "NumberOfFrames", path, 1)
    if ds.get("DimensionOrganizationType") == "TILED_FULL":
        return _TiledFull(grid, frames)
    index: dict[tuple[int, int], int] = {}
    for i in range(frames):
        pos = _functional_item(ds, i, "PlanePositionSlideSequence")
        if pos is None:
            raise SourceOpenError(f"{path}: frame {i + 1} has no PlanePositionSlideSequence; cannot place the tile")
        r, c = int(pos.RowPositionInTotalImagePixelMatrix) - 1, int(pos.ColumnPositionInTotalImagePixelMatrix) - 1
        if r % tile[0] or c % tile[1]:
            raise SourceOpenError(f"{path}: frame {i + 1} starts at ({r}, {c}), off the {tile} tile grid")
        index.setdefault((r // tile[0], c // tile[1]), i)
    return index


def _slide_geometry(ds: Dataset, path: Path) -> SlideGeometry:
    """The slide's total pixel matrix, spacing, origin and orientation, each checked.

    Raises:
        DicomHeaderError: if the spacing, origin or orientation does not parse,
            is not finite, or is degenerate, or a tile has no pixels.
    """
    meas = _functional_item(ds, 0, "PixelMeasuresSequence")
    spacing = header_numbers(meas, "PixelSpacing", path, count=2) if meas is not None else None
    if spacing is not None:
        check_spacing(spacing, path)
    origin_seq = ds.get("TotalPixelMatrixOriginSequence")
    origin = (0.0, 0.0)
    if origin_seq:
        o = origin_seq[0]
        x = header_numbers(o, "XOffsetInSlideCoordinateSystem", path, count=1) or (0.0,)
        y = header_numbers(o, "YOffsetInSlideCoordinateSystem", path, count=1) or (0.0,)
        origin = (x[0], y[0])
    orientation = header_numbers(ds, "ImageOrientationSlide", path, count=6) or ()
    if orientation:
        check_orientation(orientation, path, "ImageOrientationSlide")
    return SlideGeometry(
        shape=(int(ds.TotalPixelMatrixRows), int(ds.TotalPixelMatrixColumns)),
        tile_shape=(int(ds.Rows), int(ds.Columns)),
        pixel_spacing=spacing or (0.0, 0.0),
        origin=origin,
        orientation=orientation,
        frame_of_reference_uid=ds.get("FrameOfReferenceUID"),
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        file=str(path),
    )


class DicomSlideSource(SourceBase):
    """A tiled VL Whole Slide Microscopy image read as one 2-D (rows, cols) image, tile by tile.

    The first focal plane and optical path are read. Bands are the samples
    per pixel (3 for RGB) in the stored data type (uint8 for 8-bit), with no
    ICC profile applied. Tiles absent from a sparse (TILED_SPARSE) image read
    as 0 with valid False.

    Args:
        path: the slide file (one pyramid level).
        cache_bytes: the cap on decoded tiles kept between reads.

    Raises:
        SourceOpenError: if the file is missing, not a DICOM slide, or its tiles cannot be placed.
        DecoderMissingError: if the file is compressed and no decoder is installed.
    """

    format = "dicom"

    def __init__(self, path: str | Path, cache_bytes: int = _CACHE_BYTES) -> None:
        self.path = Path(path)
        ds = _read_header(self.path)
        if ds.get("SOPClassUID") != WSI_SOP_CLASS or "TotalPixelMatrixRows" not in ds:
            raise SourceOpenError(
                f"{self.path}: is not a tiled VL Whole Slide Microscopy image (SOP class "
                f"{ds.get('SOPClassUID')}); open it with DicomSeriesSource or DicomMultiframeSource"
            )
        self.options = DicomOptions()
        self.reference = _slide_geometry(ds, self.path)
        self.shape = self.reference.shape
        self.block_shape = self.reference.tile_shape
        self.count = int(ds.get("SamplesPerPixel", 1))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        self.dtype = np.dtype(f"{'int' if signed else 'uint'}{int(ds.BitsAllocated)}")
        grid = tuple(-(-n // t) for n, t in zip(self.shape, self.block_shape))
        self._tiles = _tile_index(ds, self.path, self.block_shape, grid)  # type: ignore[arg-type]
        self._image = _imread(self.path)
        self._cache = FrameCache(self._decode, cache_bytes)

    @property
    def frames_decoded(self) -> int:
        """How many tiles have been decoded so far (a tile served from the cache does not count)."""
        return self._cache.decoded

    def _decode(self, frame: int) -> np.ndarray:
        try:
            pixels = self._image.get_stored_frame(frame, as_index=True)
        except Exception as e:  # decoders raise many types for corrupt data
            raise SourceReadError(f"{self.path}: cannot decode tile frame {frame + 1} ({e})") from e
        return pixels[..., np.newaxis] if pixels.ndim == 2 else pixels

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read a (rows, cols) window, decoding only the tiles it touches.

        Returns:
            data (bands, rows, cols) in :attr:`dtype`, 0 outside the slide,
            and valid (rows, cols) bool.

        Raises:
            WindowError: if the window does not have 2 axes.
            SourceReadError: if a tile cannot be decoded.
        """
        check_window_ndim(window, 2, self.path)
        data, valid, inside = empty_read(window, self.shape, self.count, self.dtype)
        if inside is None:
            return data, valid
        th, tw = self.block_shape
        for tr in range(inside.start[0] // th, (inside.stop[0] - 1) // th + 1):
            for tc in range(inside.start[1] // tw, (inside.stop[1] - 1) // tw + 1):
                frame = self._tiles.get((tr, tc))
                if frame is None:
                    continue
                tile = Window((tr * th, tc * tw), (th, tw))
                part = intersection(inside, tile)
                pixels = self._cache.get(frame)[part.relative_to(tile).to_slices()]
                dst = part.relative_to(window).to_slices()
                bands_dst = (slice(None), *dst)
                data[bands_dst] = np.moveaxis(pixels, -1, 0)
                valid[dst] = True
        return data, valid

    def close(self) -> None:
        """Drop cached tiles."""
        self._cache.clear()

    def __repr__(self) -> str:
        return f"DicomSlideSource({str(self.path)!r}, shape={self.shape}, count={self.count})"
