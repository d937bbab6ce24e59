"""Where a source's pixels lie: one typed reference per kind of image.

Every source carries exactly one of these as ``reference``, and a sink reads
the one it needs: a COG needs a :class:`MapReference`, a DICOM SEG needs the
DICOM provenance of a :class:`VolumeGeometry` or :class:`SlideGeometry`, and
an OME-Zarr mask takes the scale and translation any of them can give
(:meth:`array_transform`). These are plain data (numpy only), so no format
has to import another to understand a source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ArrayTransform",
    "GeoRef",
    "MapReference",
    "Reference",
    "SlideGeometry",
    "VolumeGeometry",
    "slice_normal",
]

_SPATIAL = ("z", "y", "x")


@dataclass(frozen=True)
class ArrayTransform:
    """Physical placement of an array's spatial axes (OME-Zarr's model).

    Attributes:
        axes: axis names in array order, e.g. ``("y", "x")`` or ``("z", "y", "x")``.
        scale: physical size of one pixel per axis.
        translation: physical position of pixel 0 per axis, or None.
        units: OME unit name per axis (``"millimeter"``, ``"meter"``) or None.
    """

    axes: tuple[str, ...]
    scale: tuple[float, ...]
    translation: tuple[float, ...] | None = None
    units: tuple[str | None, ...] | None = None

    @classmethod
    def identity(cls, ndim: int) -> ArrayTransform:
        """Unit pixels at the origin, axes named ``y, x`` or ``z, y, x``."""
        return cls(_SPATIAL[-ndim:], (1.0,) * ndim)

    def array_transform(self, ndim: int) -> ArrayTransform:
        """This transform (the interface every reference shares)."""
        return self if len(self.axes) == ndim else ArrayTransform.identity(ndim)


@dataclass(frozen=True)
class MapReference:
    """Where a raster's pixels lie on the ground.

    Attributes:
        crs: the coordinate reference system as WKT, or None when the file has none.
        transform: the affine pixel-to-CRS transform as GDAL's 6 coefficients
            ``(a, b, c, d, e, f)`` in rasterio's order, or None.
        nodata: the source's nodata value, or None.
    """

    crs: str | None
    transform: tuple[float, ...] | None
    nodata: float | None

    def array_transform(self, ndim: int) -> ArrayTransform:
        """Pixel grid only: OME-Zarr has no CRS, so a map mask in Zarr keeps unit pixels."""
        return ArrayTransform.identity(ndim)


#: The name the first releases used; kept for existing callers.
GeoRef = MapReference


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal (3,) of a slice: row cosines x column cosines."""
    o = np.asarray(orientation, float)
    n = np.cross(o[:3], o[3:])
    return n / np.linalg.norm(n)


@dataclass(frozen=True)
class VolumeGeometry:
    """Where a (z, y, x) DICOM volume lies in patient space, and which instances it came from.

    Patient coordinates are DICOM's LPS, in millimetres; z runs along the
    slice normal (row cosines x column cosines) from the lowest position up.

    Attributes:
        shape: (z, y, x) voxels.
        spacing: (z, y, x) voxel size in mm: slice step, row spacing, column spacing.
        origin: LPS position in mm of voxel (0, 0, 0), the first slice's
            ImagePositionPatient.
        orientation: ImageOrientationPatient, 6 direction cosines: along a
            row (the x axis), then down a column (the y axis).
        frame_of_reference_uid: FrameOfReferenceUID, or None when absent.
        study_instance_uid: StudyInstanceUID.
        series_instance_uid: SeriesInstanceUID.
        sop_class_uid: SOPClassUID of the source instances.
        sop_instance_uids: per z slice, the SOPInstanceUID it was read from.
        files: per z slice, the file it was read from.
        frame_indices: per z slice, the 0-based frame in that file (0 for
            single-frame files).
    """

    shape: tuple[int, ...]  # 3 sizes
    spacing: tuple[float, ...]  # 3 sizes
    origin: tuple[float, ...]  # 3 coordinates
    orientation: tuple[float, ...]  # 6 cosines
    frame_of_reference_uid: str | None
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    sop_instance_uids: tuple[str, ...]
    files: tuple[str, ...]
    frame_indices: tuple[int, ...]

    @property
    def normal(self) -> np.ndarray:
        """Unit vector (3,) of the z axis in LPS."""
        return slice_normal(self.orientation)

    @property
    def direction(self) -> np.ndarray:
        """(3, 3) matrix whose columns are the z, y, x axes' unit vectors in LPS."""
        o = np.asarray(self.orientation, float)
        return np.column_stack([self.normal, o[3:], o[:3]])

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) matrix taking homogeneous voxel indices (z, y, x, 1) to LPS mm."""
        a = np.eye(4)
        a[:3, :3] = self.direction * np.asarray(self.spacing)
        a[:3, 3] = self.origin
        return a

    def array_transform(self, ndim: int) -> ArrayTransform:
        """Spacing as scale and the LPS origin reversed as (z, y, x) translation, in mm.

        OME-Zarr has no orientation, so this is exact for axial volumes only.
        """
        if ndim != 3:
            return ArrayTransform.identity(ndim)
        return ArrayTransform(
            _SPATIAL, tuple(self.spacing), tuple(self.origin)[::-1], ("millimeter",) * 3
        )  # fmt: skip


@dataclass(frozen=True)
class SlideGeometry:
    """The total pixel matrix of a tiled DICOM whole-slide image.

    Attributes:
        shape: (rows, cols) of the total pixel matrix.
        tile_shape: (rows, cols) of one frame (tile).
        pixel_spacing: (row, col) spacing in mm.
        origin: (x, y) offset in mm of the matrix's top-left corner in the
            slide coordinate system (TotalPixelMatrixOriginSequence).
        orientation: ImageOrientationSlide, 6 direction cosines.
        frame_of_reference_uid: FrameOfReferenceUID.
        study_instance_uid: StudyInstanceUID.
        series_instance_uid: SeriesInstanceUID.
        sop_class_uid: SOPClassUID.
        sop_instance_uid: SOPInstanceUID of the slide image.
        file: the file.
    """

    shape: tuple[int, ...]  # 2 sizes
    tile_shape: tuple[int, ...]  # 2 sizes
    pixel_spacing: tuple[float, ...]  # 2 sizes
    origin: tuple[float, ...]  # 2 offsets
    orientation: tuple[float, ...]
    frame_of_reference_uid: str | None
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    file: str

    def array_transform(self, ndim: int) -> ArrayTransform:
        """Pixel spacing as (y, x) scale in mm."""
        if ndim != 2:
            return ArrayTransform.identity(ndim)
        return ArrayTransform(_SPATIAL[-2:], tuple(self.pixel_spacing), None, ("millimeter",) * 2)


#: What a source's ``reference`` may be.
Reference = MapReference | ArrayTransform | VolumeGeometry | SlideGeometry
