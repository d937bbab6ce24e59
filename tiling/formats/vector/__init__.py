"""Vector labels: GeoJSON / GeoPackage / Shapefile polygons with a class attribute.

Read with pyogrio (OGR), rasterised onto the image's grid window by window
with ``rasterio.features.rasterize``. Labels only: this format reads no
images and writes no masks. Nothing here imports pyogrio until a file is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tiling.formats.base import Format

if TYPE_CHECKING:
    from tiling.formats.base import Source

__all__ = ["FORMAT", "SUFFIXES", "VectorLabelOptions"]

#: File suffixes read as vector labels.
SUFFIXES = (".geojson", ".json", ".gpkg", ".shp", ".fgb")


@dataclass(frozen=True)
class VectorLabelOptions:
    """Options of vector labels.

    Attributes:
        attribute: the feature attribute that holds each polygon's class.
        value_map: attribute value (as text) -> class, e.g. ``(("yes", 1),)``;
            without it the attribute must hold class numbers.
        background: the class of pixels no polygon covers.
        all_touched: burn every pixel a polygon touches, not only those whose
            centre it covers (for thin features such as roads).
    """

    attribute: str | None = None
    value_map: tuple[tuple[str, int], ...] | None = None
    background: int = 0
    all_touched: bool = False

    def __post_init__(self) -> None:
        if self.value_map is not None:
            pairs = self.value_map.items() if isinstance(self.value_map, dict) else self.value_map
            object.__setattr__(self, "value_map", tuple((str(k), int(v)) for k, v in pairs))


def _sniff(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES


def _open_labels(path: Path, options: VectorLabelOptions, image: Source) -> Source:
    from tiling.formats.vector.reader import VectorLabels

    return VectorLabels(path, image, options)


FORMAT = Format(
    name="vector",
    title="vector labels (GeoJSON / GeoPackage)",
    sniff=_sniff,
    extra="train",
    priority=15,
    open_labels=_open_labels,
    label_options=VectorLabelOptions,
)
