"""A small GOES-16 full disk made from the shared sample: its real CRS and extent, so its corners are off the Earth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling

from tests.conftest import SHARED

#: GOES-16 full disk, 542 x 542, geostationary projection, space masked (see SOURCES.md).
GOES = SHARED / "geotiff" / "rasterio" / "goes.tif"


def small_goes(path: Path, size: int = 96) -> Path:
    """``goes.tif`` decimated to ``size`` x ``size``: the same CRS and bounds, the space outside the disk nodata 0.

    The transform is scaled, not cropped, so the four corners lie off the
    globe exactly as in the full scene.
    """
    with rasterio.open(GOES) as src:
        data = src.read(out_shape=(src.count, size, size), resampling=Resampling.nearest)
        valid = src.dataset_mask(out_shape=(size, size), resampling=Resampling.nearest) > 0
        profile = dict(
            driver="GTiff", count=src.count, height=size, width=size, dtype="uint8", crs=src.crs, nodata=0,
            transform=src.transform @ Affine.scale(src.width / size, src.height / size), tiled=True,
            blockxsize=32, blockysize=32,
        )  # fmt: skip
    data = np.where(valid, np.maximum(data, 1), 0).astype(np.uint8)  # 0 only in space
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path
