"""Where a mask lies on the globe, for its STAC Item: its outline and bbox in WGS84.

First the grid's outline, each edge densified so that a projected grid's
curve is kept, transformed as one polygon (antimeridian cut where it
crosses it). Some grids have points that have no place on the globe: the
corners of a geostationary full disk look past the Earth, and GDAL refuses
to transform the polygon at all. Then the outline of the valid data (the
mask's pixels that are not nodata, read decimated) is taken in the source
CRS and transformed with the points off the globe dropped (OGR's partial
reprojection). What comes out is kept only as valid GeoJSON within
+-180/+-90 degrees; when neither outline gives one, the mask has no
footprint (the Item's geometry is null) and a warning says why.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
import rasterio.warp
import shapely
import shapely.geometry
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError

from tiling.core.labels import LABEL_NODATA

__all__ = ["OUTLINE_SIZE", "footprint"]

log = logging.getLogger(__name__)

#: Longest side, in pixels, of the decimated mask whose valid data outlines the footprint.
OUTLINE_SIZE = 256
#: Points per grid edge: enough for a UTM grid's curve in WGS84 to stay within a pixel of a scene.
EDGE_POINTS = 16

Geometry = dict[str, Any]


def footprint(
    shape: tuple[int, int], crs: Any, transform: Any, mask: Path | None = None
) -> tuple[Geometry | None, list[float] | None]:
    """The outline (GeoJSON, WGS84) and bbox ``[west, south, east, north]`` of a mask.

    Args:
        shape: (rows, cols) of the mask.
        crs: its CRS (anything rasterio takes), or None.
        transform: its affine transform (an ``Affine`` or GDAL's six coefficients in rasterio's order), or None.
        mask: the mask file (label 255 = nodata), read when the grid's outline cannot be transformed.

    Returns:
        ``(geometry, bbox)``, or ``(None, None)`` without a CRS, or when no valid outline can be made.
    """
    if crs is None or transform is None:
        return None, None
    crs = CRS.from_user_input(crs)
    to_map = transform if isinstance(transform, Affine) else Affine(*transform[:6])
    geometry = _to_wgs84(_grid_outline(shape, to_map), crs, partial=False)
    if geometry is None and mask is not None:
        outline = _valid_outline(mask, to_map)
        geometry = _to_wgs84(outline, crs, partial=True) if outline is not None else None
    if geometry is None:
        log.warning("%s: no footprint on the globe could be made from its grid or its valid data", mask or crs)
        return None, None
    geometry = _rounded(geometry)
    coords = shapely.get_coordinates(shapely.geometry.shape(geometry))
    return geometry, [float(coords[:, 0].min()), float(coords[:, 1].min()),
                      float(coords[:, 0].max()), float(coords[:, 1].max())]  # fmt: skip


def _grid_outline(shape: tuple[int, int], to_map: Affine) -> shapely.Polygon:
    """The grid's edges in map coordinates, :data:`EDGE_POINTS` points per edge."""
    rows, cols = shape
    n = EDGE_POINTS
    edge = [(cols * i / n, 0) for i in range(n)] + [(cols, rows * i / n) for i in range(n)]
    edge += [(cols * (n - i) / n, rows) for i in range(n)] + [(0, rows * (n - i) / n) for i in range(n)]
    return shapely.Polygon([to_map @ p for p in edge])


def _valid_outline(mask: Path, to_map: Affine) -> shapely.Geometry | None:
    """The outline of the mask's valid pixels in map coordinates, from a decimated read; None if it has none."""
    try:
        with rasterio.open(mask) as ds:
            scale = min(1.0, OUTLINE_SIZE / max(ds.height, ds.width))
            out = (max(1, round(ds.height * scale)), max(1, round(ds.width * scale)))
            labels = ds.read(1, out_shape=out, resampling=Resampling.nearest)
            nodata = int(ds.nodata) if ds.nodata is not None else LABEL_NODATA
            step = Affine.scale(ds.width / out[1], ds.height / out[0])
    except (RasterioError, CPLE_BaseError, OSError) as e:
        log.debug("%s: cannot read the valid data outline: %s", mask, e)
        return None
    valid = (labels != nodata).astype(np.uint8)
    if not valid.any():
        return None
    shapes = rasterio.features.shapes(valid, mask=valid.astype(bool), connectivity=8, transform=to_map @ step)
    outline = shapely.union_all([shapely.geometry.shape(g) for g, _ in shapes])
    # a decimated pixel's staircase says nothing more than its diagonal: keep the outline small
    return shapely.simplify(outline, 0.5 * abs((to_map @ step).a), preserve_topology=True)


def _to_wgs84(geometry: shapely.Geometry, crs: CRS, partial: bool) -> Geometry | None:
    """``geometry`` in WGS84 as GeoJSON, or None when GDAL cannot transform it or the result is no valid polygon.

    ``partial`` drops the points that have no place on the globe instead of failing.
    """
    try:
        with rasterio.Env(OGR_ENABLE_PARTIAL_REPROJECTION=partial):
            moved = rasterio.warp.transform_geom(crs, "EPSG:4326", shapely.geometry.mapping(geometry))
    except Exception as e:  # GDAL says "Reprojection failed" in several ways (CPLE_*, SystemError in a thread)
        log.debug("transforming the footprint to WGS84 failed: %s", e)
        return None
    return _clean(dict(moved) if not hasattr(moved, "to_dict") else moved.to_dict())


def _clean(geojson: Geometry) -> Geometry | None:
    """A valid (multi)polygon with finite coordinates within +-180/+-90, or None."""
    try:
        g = shapely.geometry.shape(geojson)
    except (ValueError, TypeError, shapely.errors.ShapelyError):
        return None
    coords = shapely.get_coordinates(g)
    if g.is_empty or not np.isfinite(coords).all():
        return None
    if (np.abs(coords[:, 0]) > 180 + 1e-9).any() or (np.abs(coords[:, 1]) > 90 + 1e-9).any():
        return None
    if not g.is_valid:
        g = shapely.make_valid(g)
    polygons = [p for p in getattr(g, "geoms", [g]) if isinstance(p, (shapely.Polygon, shapely.MultiPolygon))]
    if not polygons:
        return None
    g = shapely.union_all(polygons)
    if g.is_empty or g.area == 0 or not g.is_valid:
        return None
    return dict(shapely.geometry.mapping(g))


def _rounded(geometry: Geometry, digits: int = 7) -> Geometry:
    """``geometry`` with coordinates rounded to ``digits`` decimals (1e-7 degree is about 1 cm)."""

    def walk(c: Any) -> Any:
        return round(float(c), digits) if not isinstance(c, (list, tuple)) else [walk(x) for x in c]

    return {"type": geometry["type"], "coordinates": walk(geometry["coordinates"])}
