"""Pure geometry and numbers on numpy: windows, the tile grid, blend weights,
the stitcher, band statistics, label constants and intensity windows.

Nothing here imports a format library (rasterio, pydicom, highdicom, zarr),
torch or Ray, so all of it is testable in milliseconds.
"""

from __future__ import annotations

from tiling.core.blend import BlendMode, tile_weights
from tiling.core.grid import TileGrid
from tiling.core.intensity import CtWindow, apply_window, ct_window, window_bounds
from tiling.core.labels import LABEL_NODATA, class_color, default_colormap, default_names
from tiling.core.layout import TileLayout
from tiling.core.stats import BandStats, sample_band_stats
from tiling.core.stitch import BlockWriter, Stitcher, finish_block
from tiling.core.windows import EdgeMode, Window, clip, intersection, intersects, plan_windows

__all__ = [
    "LABEL_NODATA",
    "BandStats",
    "BlendMode",
    "BlockWriter",
    "CtWindow",
    "EdgeMode",
    "Stitcher",
    "TileGrid",
    "TileLayout",
    "Window",
    "apply_window",
    "class_color",
    "clip",
    "ct_window",
    "default_colormap",
    "default_names",
    "finish_block",
    "intersection",
    "intersects",
    "plan_windows",
    "sample_band_stats",
    "tile_weights",
    "window_bounds",
]
