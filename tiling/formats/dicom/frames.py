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

from tiling.core.windows import Window, intersection
from tiling.errors import SourceOpenError, SourceReadError
from tiling.formats.base import SourceBase, empty_read
from tiling.formats.dicom import DicomOptions
from tiling.formats.dicom.geometry import (
    SPACING_TOLERANCE,
    DicomSeriesError,
    FrameCache,
    SlideGeometry,
    VolumeGeometry,
    check_window_ndim,
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


def _imread(path: Path) -> hd.Image:
    """Open ``path`` for lazy frame reads after checking it has pixels we can decode."""
    if not path.is_file():
        raise SourceOpenError(f"{path}: no such file")
    try:
        header = pydicom.dcmread(path, defer_size="64 KB")
    except (InvalidDicomError, EOFError) as e:
        raise SourceOpenError(f"{path}: not a DICOM file ({e}); pass a .dcm file") from e
    if not any(k in header for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DicomSeriesError(f"{path}: has no pixel data (SOP class {header.get('SOPClassUID')}); pass an image file")
    require_decoder(path, header.file_meta.TransferSyntaxUID)
    try:
        return hd.imread(path, lazy_frame_retrieval=True)
    except (ValueError, AttributeError, KeyError) as e:
        raise SourceOpenError(f"{path}: not a DICOM image highdicom can read ({e})") from e


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
    """
    positions, orientations, spacings = [], [], []
    for i in range(frames):
        pos = _functional_item(ds, i, "PlanePositionSequence")
        ori = _functional_item(ds, i, "PlaneOrientationSequence")
        meas = _functional_item(ds, i, "PixelMeasuresSequence")
        if pos is None or ori is None or meas is None or "PixelSpacing" not in meas:
            raise DicomSeriesError(
                f"{path}: frame {i + 1} has no plane position, orientation or pixel spacing in its "
                "functional groups; the frames cannot be placed in a volume"
            )
        positions.append([float(v) for v in pos.ImagePositionPatient])
        orientations.append(tuple(float(v) for v in ori.ImageOrientationPatient))
        spacings.append(tuple(float(v) for v in meas.PixelSpacing))
    for i, (o, s) in enumerate(zip(orientations, spacings)):
        if not np.allclose(o, orientations[0], atol=1e-4) or not np.allclose(s, spacings[0], rtol=1e-3):
            raise DicomSeriesError(
                f"{path}: frame {i + 1} has orientation {o} / spacing {s}, frame 1 has "
                f"{orientations[0]} / {spacings[0]}; a volume needs one of each"
            )
    return np.array(positions), orientations[0], spacings[0]


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
        self._image = _imread(self.path)
        ds = self._image
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            raise DicomSeriesError(f"{self.path}: has {ds.SamplesPerPixel} samples per pixel; a volume needs 1")
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        positions, orientation, pixel_spacing = _frame_planes(ds, self.path, frames)
        names = [f"frame {i + 1}" for i in range(frames)]
        order, step = stack_order(positions, orientation, names, self.path, spacing_tolerance)
        if step is None:
            measures = _functional_item(ds, 0, "PixelMeasuresSequence")
            thick = measures.get("SliceThickness") if measures is not None else None
            step = float(thick) if thick else 1.0
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


def _tile_index(ds: Dataset, path: Path, tile: tuple[int, int], grid: tuple[int, int]) -> dict[tuple[int, int], int]:
    """Map (tile row, tile col) to the 0-based frame holding it, first focal plane and optical path.

    Raises:
        SourceOpenError: if a frame's position is missing or off the tile grid.
    """
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if ds.get("DimensionOrganizationType") == "TILED_FULL":
        # TILED_FULL orders frames column fastest, then row, then focal plane, then optical path.
        n = min(frames, grid[0] * grid[1])
        return {(i // grid[1], i % grid[1]): i for i in range(n)}
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
    meas = _functional_item(ds, 0, "PixelMeasuresSequence")
    spacing = tuple(float(v) for v in meas.PixelSpacing) if meas is not None and "PixelSpacing" in meas else (0.0, 0.0)
    origin_seq = ds.get("TotalPixelMatrixOriginSequence")
    origin = (0.0, 0.0)
    if origin_seq:
        o = origin_seq[0]
        origin = (float(o.XOffsetInSlideCoordinateSystem), float(o.YOffsetInSlideCoordinateSystem))
    return SlideGeometry(
        shape=(int(ds.TotalPixelMatrixRows), int(ds.TotalPixelMatrixColumns)),
        tile_shape=(int(ds.Rows), int(ds.Columns)),
        pixel_spacing=spacing,
        origin=origin,
        orientation=tuple(float(v) for v in ds.get("ImageOrientationSlide", ())),
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
        self._image = _imread(self.path)
        ds = self._image
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
