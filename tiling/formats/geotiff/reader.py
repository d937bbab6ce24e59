"""GeoTIFF / COG source on rasterio: windowed reads, nodata and masks, band selection."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.windows
from rasterio.errors import RasterioError

from tiling.core.windows import Window
from tiling.errors import ConfigError, NotGeoreferencedWarning, SourceOpenError, SourceReadError
from tiling.formats.base import SourceBase, empty_read
from tiling.formats.geotiff import GeoTiffOptions
from tiling.formats.geotiff.gdal import first_line
from tiling.formats.reference import MapReference

__all__ = ["GeoTiffSource"]

log = logging.getLogger(__name__)


class GeoTiffSource(SourceBase):
    """A GeoTIFF (or any GDAL raster) read window by window.

    Args:
        path: the raster file.
        bands: 1-based band indexes to read; all bands when None.

    Raises:
        SourceOpenError: if the file is missing, not a raster, or truncated.
        ConfigError: if a requested band does not exist.
    """

    format = "geotiff"

    def __init__(self, path: str | Path, bands: Sequence[int] | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise SourceOpenError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise SourceOpenError(f"{self.path}: is a folder, not a raster file")
        try:
            self._ds = rasterio.open(self.path)
        except RasterioError as e:
            raise SourceOpenError(f"{self.path}: not a readable raster ({first_line(e)})") from e
        try:
            self._init_metadata(bands)
        except Exception:
            self.close()
            raise

    def _init_metadata(self, bands: Sequence[int] | None) -> None:
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
        dtype = np.dtype(ds.dtypes[bands[0] - 1])
        self.dtype = np.dtype(np.float32) if dtype.kind in "fc" else dtype
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
        self.options = GeoTiffOptions(bands=bands)
        self._check_truncated()

    def _check_truncated(self) -> None:
        """Fail early if the last stored block of a band lies past the end of the file.

        A truncated GeoTIFF usually opens fine (its header is intact) and
        only fails when the missing blocks are read, deep inside a run; the
        TIFF block offsets let us catch it before any work starts.
        """
        ds = self._ds
        if ds.driver != "GTiff":
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
        try:
            block = self._ds.read(self.bands, window=rw, out_dtype=self.dtype)
            mask = self._ds.dataset_mask(window=rw) > 0
        except RasterioError as e:
            raise SourceReadError(
                f"{self.path}: cannot read rows {inside.start[0]}:{inside.stop[0]}, "
                f"cols {inside.start[1]}:{inside.stop[1]} ({first_line(e)})"
            ) from e
        if self.dtype.kind == "f":
            mask &= np.isfinite(block).all(axis=0)
        block[:, ~mask] = 0
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
