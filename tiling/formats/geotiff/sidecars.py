"""Files that describe a COG mask, published with it: a QGIS style and a STAC Item.

- ``<mask>.qml``: a QGIS layer style with a paletted (unique values)
  renderer, one entry per class with its name and colour, and nodata
  transparent. QGIS loads a ``.qml`` beside a raster of the same name
  automatically. (The COG carries the same colours as its colour table, for
  GDAL and other viewers.)
- ``<mask>.json``: a STAC Item (STAC 1.1) so archive masks can be
  catalogued: the footprint and bbox in WGS84, the acquisition datetime of
  the source where its tags give one (else the processing time, saying so),
  the model and a SHA-256 fingerprint of its weights, the classes (the
  classification extension) and the grid (the projection extension), and
  assets for the mask, the probabilities and the style.

Both are written under temporary names by :meth:`Sidecars.write` and moved
into place by :meth:`Sidecars.publish`, in the same ``finalize`` that
publishes the mask.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rasterio
import rasterio.warp
from rasterio.crs import CRS
from rasterio.errors import RasterioError

from tiling.core.labels import LABEL_NODATA, class_color
from tiling.formats.base import ModelProvenance, StagedFiles

__all__ = ["MaskDescription", "Sidecars", "qml_document", "source_datetime", "stac_item"]

log = logging.getLogger(__name__)

#: Media type of a Cloud-Optimised GeoTIFF (STAC best practice).
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
#: Tags that say when a scene was acquired, by GDAL metadata domain, most specific first.
_DATETIME_TAGS: tuple[tuple[str | None, str], ...] = (
    ("IMAGERY", "ACQUISITIONDATETIME"),
    (None, "ACQUISITIONDATETIME"),
    (None, "ACQUISITION_DATETIME"),
    (None, "DATE_ACQUIRED"),
    (None, "ACQUISITION_DATE"),
    (None, "DATETIME"),
    (None, "TIFFTAG_DATETIME"),
)


@dataclass(frozen=True)
class MaskDescription:
    """What the sidecars say about a mask.

    Attributes:
        class_names: one name per class value.
        shape: (rows, cols) of the mask.
        crs: the CRS as WKT, or None.
        transform: GDAL's 6 affine coefficients in rasterio's order, or None.
        provenance: the model that made it, or None.
        source: the image it was made from, or None.
        source_datetime: when the source was acquired (UTC), and the tag that said so; None if unknown.
    """

    class_names: tuple[str, ...]
    shape: tuple[int, int]
    crs: str | None
    transform: tuple[float, ...] | None
    provenance: ModelProvenance | None = None
    source: Path | None = None
    source_datetime: tuple[dt.datetime, str] | None = None


def _parse_datetime(text: str) -> dt.datetime | None:
    """An ISO 8601 or TIFF (``YYYY:MM:DD HH:MM:SS``) datetime; naive times are taken as UTC."""
    text = text.strip().replace("Z", "+00:00")
    m = re.fullmatch(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})", text)
    if m:
        text = "{}-{}-{}T{}:{}:{}".format(*m.groups())
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def source_datetime(path: Path) -> tuple[dt.datetime, str] | None:
    """When the scene at ``path`` was acquired, from its GDAL metadata, and the tag that said so.

    Returns None when the file is not readable by GDAL or has no such tag.
    """
    try:
        with rasterio.open(path) as ds:
            for domain, key in _DATETIME_TAGS:
                raw = ds.tags(ns=domain).get(key) if domain else ds.tags().get(key)
                value = _parse_datetime(raw) if raw else None
                if value is not None:
                    return value, f"{domain + ':' if domain else ''}{key}"
    except (RasterioError, OSError):
        return None
    return None


def qml_document(class_names: Sequence[str]) -> str:
    """A QGIS style (QML) with a paletted renderer on band 1: one entry per class, nodata transparent."""
    root = ET.Element("qgis", version="3.28.0", styleCategories="AllStyleCategories")
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(
        pipe, "rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1", nodataColor=""
    )
    ET.SubElement(renderer, "rasterTransparency")
    palette = ET.SubElement(renderer, "colorPalette")
    for k, name in enumerate(class_names):
        r, g, b = class_color(k)
        ET.SubElement(palette, "paletteEntry", value=str(k), color=f"#{r:02x}{g:02x}{b:02x}", alpha="255", label=name)
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    mark = "<!-- style of a mask written by tilewise -->\n"  # what --overwrite checks before replacing it
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        + mark
        + ET.tostring(root, encoding="unicode")
        + "\n"
    )


def _footprint(desc: MaskDescription) -> tuple[dict[str, Any] | None, list[float] | None]:
    """The mask's outline and bbox in WGS84 (edges densified, so a projected grid's curve is kept)."""
    if desc.crs is None or desc.transform is None:
        return None, None
    from affine import Affine

    a = Affine(*desc.transform)
    rows, cols = desc.shape
    n = 8
    edge = [(cols * i / n, 0) for i in range(n)] + [(cols, rows * i / n) for i in range(n)]
    edge += [(cols * (n - i) / n, rows) for i in range(n)] + [(0, rows * (n - i) / n) for i in range(n)]
    ring = [a @ p for p in edge]
    ring.append(ring[0])
    geom = rasterio.warp.transform_geom(
        CRS.from_user_input(desc.crs), "EPSG:4326", {"type": "Polygon", "coordinates": [ring]}
    )
    geometry = _rounded(dict(geom) if not hasattr(geom, "to_dict") else geom.to_dict())
    coords = [pt for part in _rings(geometry) for pt in part]
    xs, ys = [c[0] for c in coords], [c[1] for c in coords]
    return geometry, [min(xs), min(ys), max(xs), max(ys)]


def _rounded(geometry: dict[str, Any], digits: int = 7) -> dict[str, Any]:
    """``geometry`` with coordinates rounded to ``digits`` decimals (1e-7 degree is about 1 cm)."""

    def walk(c: Any) -> Any:
        return round(float(c), digits) if not isinstance(c, (list, tuple)) else [walk(x) for x in c]

    return {"type": geometry["type"], "coordinates": walk(geometry["coordinates"])}


def _rings(geometry: dict[str, Any]) -> list[list[Sequence[float]]]:
    if geometry["type"] == "Polygon":
        return [list(r) for r in geometry["coordinates"]]
    return [list(r) for poly in geometry["coordinates"] for r in poly]  # MultiPolygon (antimeridian cut)


def _slug(name: str) -> str:
    """A class name as the classification extension's ``name`` pattern allows: ``^[0-9A-Za-z-_]+$``."""
    return re.sub(r"[^0-9A-Za-z_-]+", "_", name).strip("_") or "class"


def stac_item(mask: Path, desc: MaskDescription, assets: dict[str, Path], now: dt.datetime | None = None) -> dict:
    """The STAC Item (as a dict) describing ``mask``.

    Args:
        mask: the published mask path (the Item's id is its stem).
        desc: what to say about it.
        assets: key -> published path of the files it describes (``mask``,
            ``probabilities``, ``style``); hrefs are relative to the Item.
        now: the processing time (the current time when None).
    """
    import pystac
    from pystac.extensions.classification import Classification, ClassificationExtension
    from pystac.extensions.projection import ProjectionExtension

    now = now or dt.datetime.now(dt.timezone.utc)
    geometry, bbox = _footprint(desc)
    when, said_by = desc.source_datetime if desc.source_datetime else (now, "processing time")
    p = desc.provenance
    properties: dict[str, Any] = {
        "created": pystac.utils.datetime_to_str(now),
        "title": f"{mask.name}: segmentation of {desc.source.name if desc.source else 'an image'}",
        "tilewise:datetime_from": said_by,
        "tilewise:classes": list(desc.class_names),
    }
    if p is not None:
        properties.update({"tilewise:model": p.model, "tilewise:weights": p.weights,
                           "tilewise:weights_sha256": p.weights_sha256, "tilewise:software": p.software})  # fmt: skip
    item = pystac.Item(mask.stem, geometry, bbox, when, properties)
    titles = {"mask": "class labels", "probabilities": "probability x 255 per class", "style": "QGIS style"}
    kinds = {"mask": (COG_MEDIA_TYPE, ["data"]), "probabilities": (COG_MEDIA_TYPE, ["data"]),
             "style": ("application/xml", ["metadata"])}  # fmt: skip
    for key, path in assets.items():
        media, roles = kinds.get(key, (None, ["metadata"]))
        item.add_asset(key, pystac.Asset(f"./{path.name}", titles.get(key), media_type=media, roles=roles))
    classes = [
        Classification.create(k, description=n, name=_slug(n), color_hint="{:02X}{:02X}{:02X}".format(*class_color(k)))
        for k, n in enumerate(desc.class_names)
    ]
    classes.append(Classification.create(LABEL_NODATA, description="no valid source pixel", name="nodata", nodata=True))
    ClassificationExtension.ext(item.assets["mask"], add_if_missing=True).apply(classes)
    if desc.crs is not None and desc.transform is not None:
        crs = CRS.from_user_input(desc.crs)
        epsg = crs.to_epsg()
        proj = ProjectionExtension.ext(item, add_if_missing=True)
        proj.apply(code=f"EPSG:{epsg}" if epsg else None, wkt2=None if epsg else crs.to_wkt(),
                   shape=list(desc.shape), transform=list(desc.transform))  # fmt: skip
    if desc.source is not None:
        href = os.path.relpath(desc.source.absolute(), mask.absolute().parent)
        item.add_link(pystac.Link("derived_from", href, title="source image"))
    return item.to_dict(include_self_link=False, transform_hrefs=False)


class Sidecars(StagedFiles):
    """The ``.qml`` and STAC ``.json`` beside a COG mask, written to temporary names, then published.

    Args:
        mask: the mask's final path.
        desc: what they describe.
        probs: the probabilities' final path, if saved.
    """

    def __init__(self, mask: Path, desc: MaskDescription, probs: Path | None = None) -> None:
        self.mask = mask
        self.desc = desc
        self.probs = probs
        self.qml = mask.with_suffix(".qml")
        self.stac = mask.with_suffix(".json")
        super().__init__(self.qml, self.stac)

    def write(self) -> None:
        """Write both under their temporary names."""
        self.temp(self.qml).write_text(qml_document(self.desc.class_names), encoding="utf-8")
        assets = {"mask": self.mask, "style": self.qml}
        if self.probs is not None:
            assets["probabilities"] = self.probs
        item = stac_item(self.mask, self.desc, assets)
        self.temp(self.stac).write_text(json.dumps(item, indent=2) + "\n", encoding="utf-8")
