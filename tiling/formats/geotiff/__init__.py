"""GeoTIFF / Cloud-Optimised GeoTIFF on rasterio: a windowed reader and a streaming COG writer.

The reader opens anything GDAL reads, so this format sniffs last, as the
catch-all. Nothing here imports rasterio until a file is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tiling.formats.base import Format

if TYPE_CHECKING:
    from tiling.formats.base import Sink, Source

__all__ = ["FORMAT", "GeoTiffLabelOptions", "GeoTiffOptions"]


@dataclass(frozen=True)
class GeoTiffOptions:
    """Reader options of a GeoTIFF.

    Attributes:
        bands: 1-based band indexes to read, in that order; every band when None.
    """

    bands: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(int(b) for b in self.bands))


@dataclass(frozen=True)
class GeoTiffLabelOptions:
    """Options of a label raster.

    Attributes:
        resample: accept labels on another grid and resample them onto the
            image's (nearest neighbour); refused otherwise.
    """

    resample: bool = False


def _sniff(path: Path) -> bool:
    return True  # GDAL decides; a file it cannot read gets a one-line error at open


def _open(path: Path, options: GeoTiffOptions) -> Source:
    from tiling.formats.geotiff.reader import GeoTiffSource

    return GeoTiffSource(path, bands=options.bands)


def _open_labels(path: Path, options: GeoTiffLabelOptions, image: Source) -> Source:
    from tiling.formats.geotiff.labels import GeoTiffLabels

    return GeoTiffLabels(path, image, resample=options.resample)


def _sink() -> type[Sink]:
    from tiling.formats.geotiff.writer import CogSink

    return CogSink


FORMAT = Format(
    name="geotiff",
    title="GeoTIFF",
    sniff=_sniff,
    open_source=_open,
    options=GeoTiffOptions,
    sink=_sink,
    output_name="cog",
    suffixes=(".tif", ".tiff"),
    priority=100,
    open_labels=_open_labels,
    label_options=GeoTiffLabelOptions,
)
