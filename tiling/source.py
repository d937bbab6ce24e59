"""The Source protocol, its picklable spec, and opening a source from a path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # typing.Self is 3.11+; annotations are strings at run time
    from typing_extensions import Self

import numpy as np

from tiling.windows import Window, clip, intersects

__all__ = ["GeoRef", "Source", "SourceBase", "SourceSpec", "empty_read", "guess_kind", "open_source"]


@dataclass(frozen=True)
class GeoRef:
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


@runtime_checkable
class Source(Protocol):
    """A 2-D multi-band image that can be read window by window.

    ``read`` returns ``(data, valid)``: data (bands, rows, cols) in the
    source's dtype (floats as float32) with invalid pixels zeroed, and valid
    (rows, cols) bool, False where the source marks nodata, where a value is
    not finite, and where the window overruns the image (that part is padded).
    """

    path: Path
    shape: tuple[int, int]
    count: int
    dtype: np.dtype
    block_shape: tuple[int, int]
    georef: GeoRef

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]: ...

    def spec(self) -> SourceSpec: ...

    def close(self) -> None: ...

    def __enter__(self) -> Source: ...

    def __exit__(self, *exc: object) -> None: ...


def empty_read(
    window: Window, shape: tuple[int, ...], count: int, dtype
) -> tuple[np.ndarray, np.ndarray, Window | None]:
    """The start of every ``read``: zeroed data (count, *window.shape), an
    all-invalid mask, and the part of ``window`` inside an image of ``shape``
    (None when the window lies wholly outside, so the zeros are the answer)."""
    data = np.zeros((count, *window.shape), dtype)
    valid = np.zeros(window.shape, bool)
    if not intersects(window, Window((0,) * len(shape), tuple(shape))):
        return data, valid, None
    return data, valid, clip(window, shape)


class SourceBase:
    """Context-manager plumbing shared by the readers: ``with`` closes the source."""

    def close(self) -> None:
        """Release files and caches; a no-op unless a reader holds some."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class SourceSpec:
    """What a worker needs to reopen a source: small and picklable."""

    path: str
    kind: str = "geotiff"
    bands: tuple[int, ...] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def open(self) -> Source:
        """Open the source this spec describes."""
        return open_source(self.path, bands=self.bands, kind=self.kind, **self.options)


def open_source(
    path: str | Path, bands: tuple[int, ...] | None = None, kind: str | None = None, **options: Any
) -> Source:
    """Open ``path`` with the reader for its format.

    A ``.zarr`` store (or a folder holding Zarr metadata) opens as Zarr, a
    folder or a DICOM file (``.dcm`` or the ``DICM`` preamble) as DICOM, and
    anything else through GDAL as GeoTIFF. The DICOM and Zarr readers are
    imported only when needed, so GeoTIFF users need not install them.

    Args:
        path: the image file, folder or store.
        bands: 1-based band indexes to read (GeoTIFF), all when None.
        kind: force a reader (``geotiff``, ``zarr``, ``dicom``, ``dicom-series``,
            ``dicom-multiframe``, ``dicom-slide``); guessed from the path when None.

    Raises:
        SourceOpenError: if the file is missing or not a readable image.
        ConfigError: if a band does not exist.
    """
    path = Path(path)
    kind = kind or guess_kind(path)
    if kind == "zarr":
        from tiling.zarr_io import ZarrSource

        return ZarrSource(path, **options)
    if kind.startswith("dicom"):
        from tiling import dicom

        opener = {
            "dicom": dicom.open_dicom,
            "dicom-series": dicom.DicomSeriesSource,
            "dicom-multiframe": dicom.DicomMultiframeSource,
            "dicom-slide": dicom.DicomSlideSource,
        }[kind]
        return opener(path, **options)
    from tiling.geotiff import GeoTiffSource

    return GeoTiffSource(path, bands=bands, **options)


def guess_kind(path: str | Path) -> str:
    """The reader for ``path``: ``zarr``, ``dicom`` or ``geotiff``."""
    path = Path(path)
    if path.suffix == ".zarr" or any((path / m).exists() for m in (".zgroup", ".zarray", "zarr.json")):
        return "zarr"
    if path.is_dir() or path.suffix.lower() == ".dcm":
        return "dicom"
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(132)
        if head[128:132] == b"DICM":
            return "dicom"
    return "geotiff"
