"""tiling: windows, tile grids, blending and stitching (``tiling.core``), and
the readers and writers of every format (``tiling.formats``).

No torch, no Ray: the geometry is testable in milliseconds and the formats
without a cluster.
"""

from __future__ import annotations

from tiling.core import (
    LABEL_NODATA,
    BlendMode,
    EdgeMode,
    Stitcher,
    TileGrid,
    TileLayout,
    Window,
    plan_windows,
    tile_weights,
)
from tiling.errors import (
    ConfigError,
    NotGeoreferencedWarning,
    SinkError,
    SinkFinalizedError,
    SourceOpenError,
    SourceReadError,
    SourceTooLargeError,
    TilingError,
    WindowError,
)
from tiling.formats import SourceSpec, open_sink, open_source, sniff, spec_of
from tiling.formats.base import Sink, SinkRequest, Source, SourceLimits
from tiling.formats.reference import ArrayTransform, GeoRef, MapReference, SlideGeometry, VolumeGeometry

__all__ = [
    "LABEL_NODATA",
    "ArrayTransform",
    "BlendMode",
    "ConfigError",
    "EdgeMode",
    "GeoRef",
    "MapReference",
    "NotGeoreferencedWarning",
    "Sink",
    "SinkError",
    "SinkFinalizedError",
    "SinkRequest",
    "SlideGeometry",
    "Source",
    "SourceLimits",
    "SourceOpenError",
    "SourceReadError",
    "SourceSpec",
    "SourceTooLargeError",
    "Stitcher",
    "TileGrid",
    "TileLayout",
    "TilingError",
    "VolumeGeometry",
    "Window",
    "WindowError",
    "open_sink",
    "open_source",
    "plan_windows",
    "sniff",
    "spec_of",
    "tile_weights",
]
