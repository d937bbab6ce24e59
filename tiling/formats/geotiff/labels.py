"""A label raster read on the image's pixel grid, window by window.

Labels on the same grid (same size, transform and CRS) are read as they
are. A label raster without any georeferencing but of the image's size is
taken as pixel-aligned (SpaceNet ships its masks like that) and logged.
Labels on another grid are refused unless ``resample`` is set: then a
rasterio ``WarpedVRT`` puts them on the image grid with nearest-neighbour
resampling (labels must never be averaged), still window by window. Image
pixels the labels do not cover are nodata (ignored), and labels that cover
none of the image are refused.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import rasterio
import rasterio.crs
import rasterio.errors
import rasterio.transform
import rasterio.windows
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds

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


def crs_name(crs: rasterio.crs.CRS) -> str:
    """A CRS as people name it: ``EPSG:32616``, else its PROJ string."""
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else (crs.to_proj4() or crs.to_wkt())


def _box_text(box: tuple[float, ...]) -> str:
    return f"x {box[0]:.6g}..{box[2]:.6g}, y {box[1]:.6g}..{box[3]:.6g}"


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
        self.found_crs = crs_name(self._src.crs) if self._src.crs else "no CRS"
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
        self._check_overlap(image, ref)
        log.warning("%s: labels resampled onto the grid of %s (nearest neighbour)", self.path, image.path)
        # Image pixels the labels do not cover must read as nodata, not as class 0: without a nodata
        # value of its own, the warped raster gets an alpha band that masks them.
        self._ds = WarpedVRT(
            ds, crs=ref.crs, transform=Affine(*ref.transform), width=image.shape[1], height=image.shape[0],
            resampling=Resampling.nearest, add_alpha=ds.nodata is None,
        )  # fmt: skip

    def _check_overlap(self, image: Source, ref: MapReference) -> None:
        """Refuse labels that cover no pixel of the image (they would be nodata everywhere).

        Raises:
            ConfigError: naming both extents and CRSs.
        """
        if ref.transform is None or ref.crs is None:  # the caller refuses these before
            return
        image_crs = rasterio.crs.CRS.from_wkt(ref.crs)
        rows, cols = image.shape[-2:]
        image_box = rasterio.transform.array_bounds(rows, cols, Affine(*ref.transform))
        image_box = (image_box[0], image_box[1], image_box[2], image_box[3])
        try:
            box = transform_bounds(self._src.crs, image_crs, *self._src.bounds)
        except Exception:  # PROJ refuses points outside the image CRS's domain
            box = (np.inf,) * 4
        inside = np.all(np.isfinite(box)) and box[0] < image_box[2] and image_box[0] < box[2]
        if not (inside and box[1] < image_box[3] and image_box[1] < box[3]):
            raise ConfigError(
                f"{self.path}: labels ({_box_text(self._src.bounds)} in {self.found_crs}) do not overlap "
                f"{image.path} ({_box_text(image_box)} in {crs_name(image_crs)}); give the labels of this image"
            )

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
