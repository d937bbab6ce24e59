"""Polygons with a class attribute, rasterised onto the image grid one window at a time.

Each read asks OGR only for the features whose bounding box meets the
window (``pyogrio.raw.read(bbox=...)``), reprojects them to the image's CRS
when the layer has another, and burns them with
``rasterio.features.rasterize``. Memory follows the window, not the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import rasterio.crs
import shapely
from affine import Affine
from rasterio.features import rasterize
from rasterio.warp import transform_bounds, transform_geom

from tiling.core.windows import Window
from tiling.errors import ConfigError, SourceOpenError, SourceReadError
from tiling.formats.base import Source, SourceBase, empty_read
from tiling.formats.reference import MapReference
from tiling.formats.vector import VectorLabelOptions

__all__ = ["VectorLabels"]

log = logging.getLogger(__name__)


class VectorLabels(SourceBase):
    """The polygons of a vector file as one-band labels on ``image``'s grid.

    Args:
        path: a GeoJSON, GeoPackage, Shapefile or FlatGeobuf file.
        image: the image source (its ``reference`` must be a :class:`MapReference` with a CRS).
        options: the class attribute, the value map, the background class.

    Raises:
        SourceOpenError: if OGR cannot read the file.
        ConfigError: if the attribute is missing or absent from the file, or a
            value has no class.
    """

    format = "vector"

    def __init__(self, path: str | Path, image: Source, options: VectorLabelOptions) -> None:
        self.path = Path(path)
        self.options = options
        ref = image.reference
        if not isinstance(ref, MapReference) or ref.transform is None or ref.crs is None:
            raise ConfigError(f"{self.path}: vector labels need a georeferenced image, {image.path} is not")
        try:
            info = pyogrio.read_info(self.path)
        except Exception as e:  # pyogrio raises DataSourceError, DataLayerError...
            raise SourceOpenError(f"{self.path}: not a readable vector file ({str(e).splitlines()[0]})") from e
        fields = [str(f) for f in info["fields"]]
        attr = options.attribute
        if attr is None or attr not in fields:
            what = "names no class attribute" if attr is None else f"has no attribute {attr!r}"
            raise ConfigError(
                f"{self.path}: {what}; its attributes are {', '.join(fields) or '(none)'}; "
                "choose the one holding the class with --label-attribute"
            )
        self._attr = attr
        self._lookup = self._check_values()
        self._transform = Affine(*ref.transform)
        image_crs = rasterio.crs.CRS.from_wkt(ref.crs)
        layer_crs = rasterio.crs.CRS.from_user_input(info["crs"]) if info.get("crs") else image_crs
        self._image_crs, self._layer_crs = image_crs, layer_crs
        self._reproject = layer_crs != image_crs
        self.found_crs = crs_name(layer_crs) if info.get("crs") else f"no CRS (taken as {crs_name(image_crs)})"
        self._check_reach(info, image)
        self.shape = tuple(image.shape)
        self.count = 1
        self.dtype = np.dtype(np.uint8)
        self.block_shape = tuple(image.block_shape)
        self.reference = ref

    def _check_reach(self, info: dict[str, Any], image: Source) -> None:
        """Refuse a file none of whose shapes reaches the image: its labels would be background everywhere.

        Raises:
            ConfigError: naming the shapes' extent and CRS, and the image's.
        """
        bounds = info.get("total_bounds")
        if bounds is None:  # formats without a stored extent: OGR scans the geometries once
            bounds = pyogrio.read_info(self.path, force_total_bounds=True).get("total_bounds")
        if bounds is None or not np.all(np.isfinite(bounds)):
            raise ConfigError(
                f"{self.path}: none of its {info.get('features', 0)} features has a geometry, so every pixel of "
                f"{image.path} would be background; give labels with shapes"
            )
        rows, cols = tuple(image.shape)[-2:]
        xs, ys = zip(*(self._transform @ (c, r) for r, c in ((0, 0), (0, cols), (rows, 0), (rows, cols))))
        image_box = (min(xs), min(ys), max(xs), max(ys))
        box, hint = _in_crs(tuple(bounds), self._layer_crs, self._image_crs)
        if box is not None and _overlaps(box, image_box):
            return
        raise ConfigError(
            f"{self.path}: its shapes ({_box_text(bounds)} in {self.found_crs}) do not reach {image.path} "
            f"({_box_text(image_box)} in {crs_name(self._image_crs)}), so every pixel would be background{hint}"
        )

    def _check_values(self) -> dict[str, int]:
        """Every distinct attribute value mapped to a class (read once, attributes only)."""
        _, _, _, fields = pyogrio.raw.read(self.path, columns=[self._attr], read_geometry=False)
        values = sorted({str(v) for v in fields[0]})
        mapping = dict(self.options.value_map or ())
        lookup = {}
        for v in values:
            if v in mapping:
                lookup[v] = mapping[v]
            elif not mapping and _is_int(v):
                lookup[v] = int(float(v))
            else:
                hint = "map it with --label-map VALUE:CLASS" if mapping else "give --label-map VALUE:CLASS,..."
                raise ConfigError(f"{self.path}: attribute {self._attr} has value {v!r}, which is no class; {hint}")
        bad = [f"{v}->{k}" for v, k in lookup.items() if not 0 <= k < 255]
        if bad:
            raise ConfigError(f"{self.path}: classes must be 0..254, got {', '.join(bad)}")
        return lookup

    def _shapes(self, window: Window) -> list[tuple[Any, int]]:
        (r0, c0), (h, w) = window.start, window.shape
        left, top = self._transform @ (c0, r0)
        right, bottom = self._transform @ (c0 + w, r0 + h)
        bounds = (min(left, right), min(top, bottom), max(left, right), max(top, bottom))
        if self._reproject:
            bounds = transform_bounds(self._image_crs, self._layer_crs, *bounds)
        try:
            _, _, geoms, fields = pyogrio.raw.read(self.path, columns=[self._attr], bbox=bounds)
        except Exception as e:
            raise SourceReadError(f"{self.path}: cannot read features in {bounds} ({str(e).splitlines()[0]})") from e
        shapes = []
        for wkb, value in zip(geoms, fields[0]):
            if wkb is None:
                continue
            geom: Any = shapely.from_wkb(wkb).__geo_interface__
            if self._reproject:
                geom = transform_geom(self._layer_crs, self._image_crs, geom)
            shapes.append((geom, self._lookup[str(value)]))
        return shapes

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Rasterised classes (1, rows, cols) uint8; valid everywhere inside the image."""
        data, valid, inside = empty_read(window, self.shape, 1, self.dtype)
        if inside is None:
            return data, valid
        shapes = self._shapes(inside)
        sl = inside.relative_to(window).to_slices()
        out_transform = self._transform @ Affine.translation(inside.start[1], inside.start[0])
        if shapes:
            burnt = rasterize(
                shapes, out_shape=inside.shape, transform=out_transform, fill=self.options.background,
                all_touched=self.options.all_touched, dtype="uint8",
            )  # fmt: skip
        else:
            burnt = np.full(inside.shape, self.options.background, np.uint8)
        data[0][sl] = burnt
        valid[sl] = True
        return data, valid


def crs_name(crs: rasterio.crs.CRS) -> str:
    """A CRS as people name it: ``EPSG:32616``, else its PROJ string."""
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else (crs.to_proj4() or crs.to_wkt())


def _in_crs(
    box: tuple[float, float, float, float], src: rasterio.crs.CRS, dst: rasterio.crs.CRS
) -> tuple[tuple[float, float, float, float] | None, str]:
    """``box`` reprojected from ``src`` to ``dst`` (None if it cannot be), and a hint when its numbers cannot be in ``src``."""
    if src.is_geographic and (max(abs(box[0]), abs(box[2])) > 360 or max(abs(box[1]), abs(box[3])) > 90):
        return None, (
            "; its coordinates are no longitudes and latitudes: a GeoJSON without a crs member is read as WGS 84 "
            "(RFC 7946), so give the file its CRS (a crs member, or convert it with ogr2ogr -s_srs ... -t_srs ...)"
        )
    if src == dst:
        return box, ""
    try:
        out = transform_bounds(src, dst, *box)
    except Exception:  # PROJ refuses points outside the target's domain
        return None, ""
    return (tuple(out), "") if np.all(np.isfinite(out)) else (None, "")


def _overlaps(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _box_text(box: Any) -> str:
    return f"x {box[0]:.6g}..{box[2]:.6g}, y {box[1]:.6g}..{box[3]:.6g}"


def _is_int(text: str) -> bool:
    try:
        return float(text) == int(float(text))
    except ValueError:
        return False
