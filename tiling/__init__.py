"""tiling: windows, tile grids, sources, blending, stitching and sinks.

Pure I/O and geometry on numpy, rasterio and friends: no torch, no Ray.
"""

from __future__ import annotations

from tiling.blend import BlendMode, tile_weights
from tiling.errors import (
    ConfigError,
    NotGeoreferencedWarning,
    SinkError,
    SinkFinalizedError,
    SourceOpenError,
    SourceReadError,
    TilingError,
    WindowError,
)
from tiling.grid import TileGrid
from tiling.sink import Sink
from tiling.source import GeoRef, Source, SourceSpec, open_source
from tiling.stitch import LABEL_NODATA, Stitcher
from tiling.windows import EdgeMode, Window, plan_windows

__all__ = [
    "LABEL_NODATA",
    "BlendMode",
    "ConfigError",
    "EdgeMode",
    "GeoRef",
    "NotGeoreferencedWarning",
    "SinkError",
    "Sink",
    "SinkFinalizedError",
    "Source",
    "SourceOpenError",
    "SourceReadError",
    "SourceSpec",
    "Stitcher",
    "TileGrid",
    "TilingError",
    "Window",
    "WindowError",
    "open_source",
    "plan_windows",
    "tile_weights",
]
