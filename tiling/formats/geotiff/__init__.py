"""GeoTIFF / Cloud-Optimised GeoTIFF on rasterio: a windowed reader and a streaming COG writer.

This format sniffs last, as the catch-all: the reader opens a file with
GDAL's GTiff driver only (a COG is a GTiff to GDAL), and with other GDAL
raster drivers only when the user names them (``allow_drivers``), since a
VRT or another driver's header can point at other files or claim any size.
Nothing here imports rasterio until a file is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tiling.formats.base import ComplexPart, Format
from tiling.options import lookup_option

if TYPE_CHECKING:
    from tiling.formats.base import Sink, Source

__all__ = ["FORMAT", "GeoTiffLabelOptions", "GeoTiffOptions"]


@dataclass(frozen=True)
class GeoTiffOptions:
    """Reader options of a GeoTIFF.

    Attributes:
        bands: 1-based band indexes to read, in that order; every band when None.
        allow_drivers: GDAL raster drivers to try after GTiff (``("VRT",)``,
            ``("JP2OpenJPEG", "PNG")``); none by default.
        complex: what to make of complex pixels (``abs``, ``real``, ``imag``,
            ``phase``); complex input is refused when None.
    """

    bands: tuple[int, ...] | None = None
    allow_drivers: tuple[str, ...] = ()
    complex: ComplexPart | None = None

    def __post_init__(self) -> None:
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(int(b) for b in self.bands))
        drivers = (self.allow_drivers,) if isinstance(self.allow_drivers, str) else self.allow_drivers
        object.__setattr__(self, "allow_drivers", tuple(str(d).strip() for d in drivers if str(d).strip()))
        if self.complex is not None:
            object.__setattr__(self, "complex", lookup_option(self.complex, ComplexPart, "complex"))


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

    return GeoTiffSource(path, bands=options.bands, allow_drivers=options.allow_drivers, complex=options.complex)


def _owns(path: Path) -> bool:
    """A GeoTIFF carrying tilewise's mark (the ``TILEWISE`` tag; masks of 0.1 have ``CLASS_NAMES``),
    or a sidecar tilewise wrote beside one (a QGIS style or STAC Item that names tilewise).
    """
    if path.suffix.lower() in (".qml", ".json"):
        try:
            head = path.read_text(errors="replace")[:65536]
        except OSError:
            return False
        return "tilewise" in head and (path.suffix.lower() == ".json" or "<qgis" in head)
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with rasterio.open(path) as ds:
            tags = ds.tags()
    except (RasterioError, OSError):
        return False
    return "TILEWISE" in tags or ("CLASS_NAMES" in tags and "NODATA_MEANING" in tags)


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
    owns=_owns,
    open_labels=_open_labels,
    label_options=GeoTiffLabelOptions,
)
