"""GeoTIFF / COG source on rasterio: windowed reads, nodata and masks, band selection.

Files are opened with GDAL's GTiff driver, and with other raster drivers
only when the user allows them by name (see :mod:`tiling.formats.geotiff`).
"""

from __future__ import annotations

import difflib
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
import rasterio.windows
from rasterio.errors import RasterioError

from tiling.core.windows import Window
from tiling.errors import ConfigError, NotGeoreferencedWarning, SourceOpenError, SourceReadError
from tiling.formats.base import ComplexPart, SourceBase, check_complex, empty_read, real_float32
from tiling.formats.geotiff import GeoTiffOptions
from tiling.formats.geotiff.gdal import first_line
from tiling.formats.reference import MapReference

__all__ = ["SUPPORTED_DRIVERS", "GeoTiffSource", "gdal_raster_driver"]

log = logging.getLogger(__name__)

#: The GDAL drivers tilewise opens without being asked. A COG is a GTiff to
#: GDAL (its COG driver only writes), so GTiff reads both.
SUPPORTED_DRIVERS = ("GTiff",)
#: Leading bytes of a TIFF (classic and BigTIFF, either byte order).
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def gdal_raster_driver(name: str) -> str:
    """The GDAL raster driver called ``name`` (any case), by its canonical short name.

    Raises:
        ConfigError: if GDAL has no raster driver of that name (naming the closest).
    """
    with rasterio.Env() as env:
        known = env.drivers()
    by_lower = {k.lower(): k for k in known}
    found = by_lower.get(name.strip().lower())
    if found is None:
        close = difflib.get_close_matches(name.strip().lower(), list(by_lower), n=1)
        hint = f"; did you mean {by_lower[close[0]]!r}?" if close else ""
        raise ConfigError(f"allow_drivers: {name!r} is not a GDAL raster driver{hint}")
    return "GTiff" if found == "COG" else found


def _refusal(path: Path, error: RasterioError, allowed: Sequence[str]) -> SourceOpenError:
    """The one-line refusal of a file none of the ``allowed`` drivers opens."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        head = b""
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<VRTDataset"):
        return SourceOpenError(
            f"{path}: is a GDAL VRT, not a GeoTIFF; a VRT can point at other files and claim any size, "
            "so tilewise reads one only with --allow-drivers VRT (allow_drivers= in Python)"
        )
    if head[:4] in _TIFF_MAGIC or len(allowed) > 1:
        return SourceOpenError(f"{path}: not a readable raster ({first_line(error)})")
    return SourceOpenError(
        f"{path}: not a readable raster ({first_line(error)}); tilewise reads GeoTIFF/COG, and other GDAL "
        "formats only when named with --allow-drivers, e.g. --allow-drivers PNG"
    )


def _open_dataset(path: Path, allow_drivers: Sequence[str]) -> rasterio.DatasetReader:
    """Open ``path`` with the first of GTiff and ``allow_drivers`` that reads it.

    Raises:
        SourceOpenError: if none does.
        ConfigError: if an allowed driver is not a GDAL raster driver.
    """
    allowed = list(SUPPORTED_DRIVERS)
    for name in allow_drivers:
        driver = gdal_raster_driver(name)
        if driver not in allowed:
            allowed.append(driver)
    first: RasterioError | None = None
    for driver in allowed:
        try:
            with warnings.catch_warnings():  # the reader warns about a missing CRS itself, naming the file
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                return rasterio.open(path, driver=driver)
        except RasterioError as e:
            first = first or e
    assert first is not None  # at least GTiff was tried
    raise _refusal(path, first, allowed)


class GeoTiffSource(SourceBase):
    """A GeoTIFF (or a raster of a GDAL driver the user allowed) read window by window.

    Args:
        path: the raster file.
        bands: 1-based band indexes to read; all bands when None.
        allow_drivers: GDAL raster drivers to try after GTiff (e.g. ``("VRT",)``).
        complex: what to make of complex pixels; complex files are refused when None.

    Raises:
        SourceOpenError: if the file is missing, not a GeoTIFF (nor of an
            allowed driver), truncated, or complex with no ``complex`` given.
        ConfigError: if a requested band or an allowed driver does not exist.
    """

    format = "geotiff"

    def __init__(
        self,
        path: str | Path,
        bands: Sequence[int] | None = None,
        allow_drivers: Sequence[str] = (),
        complex: ComplexPart | None = None,
    ) -> None:
        self.path = Path(path)
        # GDAL's virtual file systems (/vsis3/, /vsicurl/...) are not on the local disk: GDAL says if they are missing
        virtual = str(self.path).startswith("/vsi")
        if not virtual and not self.path.exists():
            raise SourceOpenError(f"{self.path}: no such file")
        if not virtual and self.path.is_dir():
            raise SourceOpenError(f"{self.path}: is a folder, not a raster file")
        self._ds = _open_dataset(self.path, allow_drivers)
        try:
            self._init_metadata(bands, tuple(allow_drivers), complex)
        except Exception:
            self.close()
            raise

    def _init_metadata(
        self, bands: Sequence[int] | None, allow_drivers: tuple[str, ...], part: ComplexPart | None
    ) -> None:
        ds = self._ds
        if bands is None:
            bands = tuple(range(1, ds.count + 1))
        bands = tuple(int(b) for b in bands)
        bad = [b for b in bands if not 1 <= b <= ds.count]
        if bad or not bands:
            raise ConfigError(
                f"{self.path}: band {bad[0] if bad else '(none)'} does not exist; "
                f"the file has {ds.count} band(s), numbered 1 to {ds.count}"
            )
        self.bands = bands
        self.count = len(bands)
        self.shape = (ds.height, ds.width)
        stored = str(ds.dtypes[bands[0] - 1])
        check_complex(self.path, stored, part)
        # complex_int16 (GDAL CInt16) has no numpy dtype; GDAL widens it to complex64 on read
        self._read_dtype = np.dtype("complex64" if stored == "complex_int16" else stored)
        self._part = part
        self.dtype = np.dtype(np.float32) if self._read_dtype.kind in "fc" else self._read_dtype
        self.block_shape = tuple(ds.block_shapes[bands[0] - 1])
        crs = ds.crs.to_wkt() if ds.crs else None
        georeferenced = crs is not None and not ds.transform.is_identity
        if not georeferenced:
            warnings.warn(
                f"{self.path}: has no CRS or geotransform; the mask will not be georeferenced either",
                NotGeoreferencedWarning,
                stacklevel=3,
            )
        self.reference = MapReference(crs=crs, transform=tuple(ds.transform)[:6], nodata=ds.nodata)
        self.options = GeoTiffOptions(bands=bands, allow_drivers=allow_drivers, complex=part)
        self._check_truncated()

    def _check_truncated(self) -> None:
        """Fail early if the last stored block of a band lies past the end of the file.

        A truncated GeoTIFF usually opens fine (its header is intact) and
        only fails when the missing blocks are read, deep inside a run; the
        TIFF block offsets let us catch it before any work starts.
        """
        ds = self._ds
        if ds.driver != "GTiff" or str(self.path).startswith("/vsi"):  # an object's size is not a local stat
            return
        size = os.path.getsize(self.path)
        bh, bw = self.block_shape
        last = ((ds.height - 1) // bh, (ds.width - 1) // bw)
        for b in range(1, ds.count + 1):
            off = ds.get_tag_item(f"BLOCK_OFFSET_{last[1]}_{last[0]}", "TIFF", bidx=b)
            nbytes = ds.get_tag_item(f"BLOCK_SIZE_{last[1]}_{last[0]}", "TIFF", bidx=b)
            if off and nbytes and int(off) + int(nbytes) > size:
                raise SourceOpenError(
                    f"{self.path}: truncated file ({size} bytes, but band {b}'s last block "
                    f"ends at byte {int(off) + int(nbytes)}); copy or download it again"
                )

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read ``window`` (rows, cols), padding where it overruns the image.

        Returns:
            data (bands, rows, cols) in :attr:`dtype` with invalid pixels 0,
            and valid (rows, cols) bool.

        Raises:
            SourceReadError: if GDAL cannot decode the data.
        """
        data, valid, inside = empty_read(window, self.shape, self.count, self.dtype)
        if inside is None:
            return data, valid
        rw = rasterio.windows.Window(inside.start[1], inside.start[0], inside.shape[1], inside.shape[0])
        where = f"rows {inside.start[0]}:{inside.stop[0]}, cols {inside.start[1]}:{inside.stop[1]}"
        wide = self._read_dtype.itemsize > 4 or self._read_dtype.kind == "c"  # float64, complex
        try:
            block = self._ds.read(self.bands, window=rw, out_dtype=self._read_dtype if wide else self.dtype)
            mask = self._ds.dataset_mask(window=rw) > 0
        except RasterioError as e:
            raise SourceReadError(f"{self.path}: cannot read {where} ({first_line(e)})") from e
        if wide:
            block = real_float32(block, self.path, where, self._part)
        if self.dtype.kind == "f":
            mask &= np.isfinite(block).all(axis=0)
        if not mask.all():  # most tiles of most scenes are wholly valid: no pass over the bands
            block[:, ~mask] = 0
        if inside == window and block.dtype == data.dtype:  # wholly inside: GDAL's fresh arrays are the answer
            return block, mask
        sl = inside.relative_to(window).to_slices()
        bands_sl = (slice(None), *sl)
        data[bands_sl] = block
        valid[sl] = mask
        return data, valid

    def close(self) -> None:
        """Close the file."""
        ds = getattr(self, "_ds", None)
        if ds is not None and not ds.closed:
            ds.close()

    def __repr__(self) -> str:
        return f"GeoTiffSource({str(self.path)!r}, bands={self.bands}, shape={self.shape})"
