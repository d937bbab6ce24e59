"""A synthetic, georeferenced sample scene, so the demo needs no download."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from tiling.formats.geotiff.gdal import gdal_env

__all__ = ["make_scene"]

#: UTM 33N, 10 m pixels: a Sentinel-2-like grid near Vienna.
DEMO_CRS = "EPSG:32633"
DEMO_ORIGIN = (600_000.0, 5_350_000.0)
DEMO_PIXEL = 10.0


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: bilinear upsampling of a coarse random grid."""
    coarse = rng.random((cells + 1, cells + 1))
    r = np.linspace(0, cells, shape[0])
    c = np.linspace(0, cells, shape[1])
    r0, c0 = np.minimum(r.astype(int), cells - 1), np.minimum(c.astype(int), cells - 1)
    fr, fc = (r - r0)[:, None], (c - c0)[None, :]
    a = coarse[r0][:, c0]
    b = coarse[r0][:, c0 + 1]
    d = coarse[r0 + 1][:, c0]
    e = coarse[r0 + 1][:, c0 + 1]
    out: np.ndarray = (a * (1 - fr) * (1 - fc) + b * (1 - fr) * fc + d * fr * (1 - fc) + e * fr * fc).astype(np.float32)
    return out


def make_scene(path: str | Path, size: int = 1024, seed: int = 0) -> Path:
    """Write a 3-band uint8 RGB scene of ``size`` x ``size`` pixels with fields,
    forest, a river and a nodata wedge (value 0, declared as nodata) in one corner,
    as a tiled, compressed GeoTIFF in UTM 33N. Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size, size)
    land = _smooth_noise(rng, shape, 8)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    river = np.abs(cols - (size * 0.5 + size * 0.12 * np.sin(rows / size * 6.0))) < size * 0.02
    forest = land > 0.6
    rgb = np.stack([
        np.where(forest, 40, 150 + 60 * land),
        np.where(forest, 90, 130 + 50 * land),
        np.where(forest, 40, 70 + 30 * land),
    ])  # fmt: skip
    rgb[:, river] = np.array([30.0, 60.0, 120.0])[:, None]
    rgb += rng.normal(0, 6, rgb.shape)
    img = np.clip(rgb, 1, 255).astype(np.uint8)
    img[:, rows + cols < size * 0.3] = 0  # nodata wedge, like the edge of a satellite swath
    profile = dict(
        driver="GTiff", height=size, width=size, count=3, dtype="uint8", crs=DEMO_CRS, nodata=0,
        transform=Affine(DEMO_PIXEL, 0, DEMO_ORIGIN[0], 0, -DEMO_PIXEL, DEMO_ORIGIN[1]),
        tiled=True, blockxsize=256, blockysize=256, compress="deflate", photometric="RGB",
    )  # fmt: skip
    with gdal_env(), rasterio.open(path, "w", **profile) as dst:
        dst.write(img)
    return path
