"""A label raster read on the image's pixel grid, window by window.

Labels on the same grid (same size, transform and CRS) are read as they
are. A label raster without any georeferencing but of the image's size is
taken as pixel-aligned (SpaceNet ships its masks like that) and logged.
Labels on another grid are refused unless ``resample`` is set: then a
rasterio ``WarpedVRT`` puts them on the image grid with nearest-neighbour
resampling (labels must never be averaged), still window by window.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
import rasterio.windows
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT

from tiling.core.windows import Window
from tiling.errors import ConfigError, SourceOpenError, SourceReadError
from tiling.formats.base import Source, SourceBase, check_label_shape, empty_read
from tiling.formats.geotiff import GeoTiffLabelOptions
from tiling.formats.geotiff.gdal import first_line
from tiling.formats.reference import MapReference

__all__ = ["GeoTiffLabels"]

log = logging.getLogger(__name__)


def _same_grid(ds: rasterio.DatasetReader, ref: MapReference, shape: tuple[int, ...]) -> bool:
    if (ds.height, ds.width) != tuple(shape) or ref.transform is None:
        return False
    if not Affine(*ref.transform).almost_equals(ds.transform, precision=1e-9 * max(1.0, abs(ref.transform[0]))):
        return False
    return ds.crs is None or ref.crs is None or ds.crs == rasterio.crs.CRS.from_wkt(ref.crs)


class GeoTiffLabels(SourceBase):
    """Band 1 of a raster as the labels of ``image``.

    Args:
        path: the label raster.
        image: the image source (its ``reference`` must be a :class:`MapReference`).
        resample: put labels of another grid onto the image's (nearest neighbour).

    Raises:
        SourceOpenError: if the file cannot be read.
        ConfigError: if the grids differ and ``resample`` is off.
    """

    format = "geotiff"

    def __init__(self, path: str | Path, image: Source, resample: bool = False) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceOpenError(f"{self.path}: no such labels file")
        try:
            with warnings.catch_warnings():  # an unreferenced mask is handled (and logged) in _fit
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                self._src = rasterio.open(self.path)
        except RasterioError as e:
            raise SourceOpenError(f"{self.path}: not a readable raster ({first_line(e)})") from e
        self._ds: rasterio.DatasetReader | WarpedVRT = self._src
        try:
            self._fit(image, resample)
        except Exception:
            self.close()
            raise
        self.options = GeoTiffLabelOptions(resample=resample)
        self.count = 1
        self.shape = tuple(image.shape)
        self.dtype = np.dtype(self._src.dtypes[0])
        self.block_shape = tuple(self._src.block_shapes[0])
        self.reference = image.reference

    def _fit(self, image: Source, resample: bool) -> None:
        ref = image.reference
        ds = self._src
        if not isinstance(ref, MapReference):
            raise ConfigError(f"{self.path}: a label raster needs a map image, {image.path} is not one")
        unreferenced = ds.crs is None and ds.transform.is_identity
        if unreferenced and (ds.height, ds.width) == tuple(image.shape):
            log.info("%s: labels have no georeferencing; taken as pixel-aligned with %s", self.path, image.path)
            check_label_shape(self.path, (ds.height, ds.width), ds.count, image)
            return
        if _same_grid(ds, ref, image.shape):
            check_label_shape(self.path, (ds.height, ds.width), ds.count, image)
            return
        if not resample or unreferenced or ref.crs is None or ref.transform is None:
            raise ConfigError(
                f"{self.path}: labels are on another grid than {image.path} "
                f"({ds.width}x{ds.height} in {ds.crs or 'no CRS'} vs {image.shape[1]}x{image.shape[0]}); "
                "pass --resample-labels to resample them (nearest neighbour)"
            )
        log.warning("%s: labels resampled onto the grid of %s (nearest neighbour)", self.path, image.path)
        self._ds = WarpedVRT(
            ds, crs=ref.crs, transform=Affine(*ref.transform), width=image.shape[1], height=image.shape[0],
            resampling=Resampling.nearest,
        )  # fmt: skip

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Labels (1, rows, cols) and valid (rows, cols): False at the labels' nodata and outside."""
        data, valid, inside = empty_read(window, self.shape, 1, self.dtype)
        if inside is None:
            return data, valid
        rw = rasterio.windows.Window(inside.start[1], inside.start[0], inside.shape[1], inside.shape[0])
        try:
            block = self._ds.read(1, window=rw)
            mask = self._ds.read_masks(1, window=rw) > 0
        except RasterioError as e:
            raise SourceReadError(f"{self.path}: cannot read labels at {inside} ({first_line(e)})") from e
        sl = inside.relative_to(window).to_slices()
        data[0][sl] = np.where(mask, block, 0)
        valid[sl] = mask
        return data, valid

    def close(self) -> None:
        """Close the files."""
        for ds in (getattr(self, "_ds", None), getattr(self, "_src", None)):
            if ds is not None and not ds.closed:
                ds.close()
