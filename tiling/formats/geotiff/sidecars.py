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
  assets for the mask, the probabilities, the style and the seam QA files.
  The footprint is made by :mod:`tiling.formats.geotiff.footprint` (the
  valid data's outline where the grid's corners are off the globe).

Both are written under temporary names by :meth:`Sidecars.write` and moved
into place by :meth:`Sidecars.publish`, in the same ``finalize`` that
publishes the mask. They are optional products: one that cannot be made
is one warning line naming it and the reason (:func:`optional`), and the
mask is published without it.

Products made after the mask (polygons, a quicklook) cannot be known to
the Item when the sink writes it, so the Item lists them afterwards: each
product, once published, is added to the Item by :func:`add_assets`,
which rewrites the Item under a temporary name and renames it into place
(atomic), so the Item lists exactly the files that exist.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import rasterio
from rasterio.crs import CRS
from rasterio.errors import RasterioError

from tiling.core.labels import LABEL_NODATA, RGB, class_color, hex_color
from tiling.formats.base import ModelProvenance, StagedFiles, staged_file
from tiling.formats.geotiff.footprint import footprint

__all__ = [
    "ASSETS",
    "MaskDescription",
    "Sidecars",
    "add_assets",
    "optional",
    "remove_previous",
    "qml_document",
    "source_datetime",
    "stac_item",
]

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
#: What the Item says of each kind of asset: title, media type, roles (STAC best practices).
ASSETS: dict[str, tuple[str, str, list[str]]] = {
    "mask": ("class labels", COG_MEDIA_TYPE, ["data"]),
    "probabilities": ("probability x 255 per class", COG_MEDIA_TYPE, ["data"]),
    "style": ("QGIS style of the mask", "application/xml", ["metadata"]),
    "qa": ("seam QA: tiles and blend weight per pixel", "image/tiff; application=geotiff", ["qa"]),
    "qa_report": ("seam QA report", "application/json", ["qa", "metadata"]),
    "qa_style": ("QGIS style of the seam QA raster", "application/xml", ["metadata"]),
    "polygons": ("polygons per class", "application/geopackage+sqlite3", ["data"]),
    "quicklook": ("quicklook: the source, the mask and a legend", "image/png", ["overview"]),
}


def optional(what: str, path: Path, make: Callable[[], object]) -> bool:
    """Make an optional product; if it fails, log one warning line naming it and the reason, and go on.

    Nothing optional may cost the mask: a style, a STAC Item, QA files,
    polygons or a quicklook that cannot be made (a footprint GDAL cannot
    transform, a full disk, a bug) is reported and left out.

    Returns:
        Whether it was made.
    """
    try:
        make()
    except Exception as e:  # any failure: the mask is what matters
        reason = " ".join(str(e).split()) or type(e).__name__
        log.warning("%s: %s not written (%s: %s); the mask is published without it", path, what,
                    type(e).__name__, reason)  # fmt: skip
        return False
    return True


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
        class_colors: one RGB colour per class; None for the default palette.
    """

    class_names: tuple[str, ...]
    shape: tuple[int, int]
    crs: str | None
    transform: tuple[float, ...] | None
    provenance: ModelProvenance | None = None
    source: Path | None = None
    source_datetime: tuple[dt.datetime, str] | None = None
    class_colors: tuple[RGB, ...] | None = None

    @property
    def colors(self) -> tuple[RGB, ...]:
        """One colour per class: the given ones, else the default palette."""
        return self.class_colors or tuple(class_color(k) for k in range(len(self.class_names)))


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


def qml_document(class_names: Sequence[str], colors: Sequence[RGB] | None = None) -> str:
    """A QGIS style (QML) with a paletted renderer on band 1: one entry per class, nodata transparent.

    ``colors`` gives one RGB per class; the default palette when None.
    """
    root = ET.Element("qgis", version="3.28.0", styleCategories="AllStyleCategories")
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(
        pipe, "rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1", nodataColor=""
    )
    ET.SubElement(renderer, "rasterTransparency")
    palette = ET.SubElement(renderer, "colorPalette")
    for k, name in enumerate(class_names):
        color = hex_color(colors[k] if colors else class_color(k))
        ET.SubElement(palette, "paletteEntry", value=str(k), color=color, alpha="255", label=name)
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


def _slug(name: str) -> str:
    """A class name as the classification extension's ``name`` pattern allows: ``^[0-9A-Za-z-_]+$``."""
    return re.sub(r"[^0-9A-Za-z_-]+", "_", name).strip("_") or "class"


def stac_item(
    mask: Path,
    desc: MaskDescription,
    assets: dict[str, Path],
    now: dt.datetime | None = None,
    mask_file: Path | None = None,
) -> dict:
    """The STAC Item (as a dict) describing ``mask``.

    Args:
        mask: the published mask path (the Item's id is its stem).
        desc: what to say about it.
        assets: key (one of :data:`ASSETS`) -> published path of the files it
            describes; hrefs are relative to the Item.
        now: the processing time (the current time when None).
        mask_file: where the mask's pixels can be read now (its temporary
            name before publishing), for the footprint of a grid whose
            corners are off the globe; ``mask`` when None.
    """
    import pystac
    from pystac.extensions.classification import Classification, ClassificationExtension
    from pystac.extensions.projection import ProjectionExtension

    now = now or dt.datetime.now(dt.timezone.utc)
    geometry, bbox = footprint(desc.shape, desc.crs, desc.transform, mask_file or mask)
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
    for key, path in assets.items():
        item.add_asset(key, pystac.Asset.from_dict(_asset(key, path, mask.parent)))
    classes = [
        Classification.create(k, description=n, name=_slug(n), color_hint=hex_color(c)[1:].upper())
        for k, (n, c) in enumerate(zip(desc.class_names, desc.colors))
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


def _asset(key: str, path: Path, folder: Path) -> dict[str, Any]:
    """The Item's entry for the file ``path`` of kind ``key``, its href relative to the Item's ``folder``."""
    title, media, roles = ASSETS.get(key, (key, "application/octet-stream", ["metadata"]))
    href = os.path.relpath(path.absolute(), folder.absolute())
    return {"href": href if href.startswith("..") else f"./{href}", "title": title, "type": media, "roles": roles}


def add_assets(item: Path, assets: dict[str, Path]) -> None:
    """List published products in the STAC Item ``item``, rewriting it atomically.

    The Item is rewritten under a temporary name and renamed into place, so
    a reader sees the old Item or the new one, never half of either.

    Args:
        item: the Item (``<mask>.json``) that tilewise wrote.
        assets: key (one of :data:`ASSETS`) -> the published file.

    Raises:
        OSError, ValueError: if the Item cannot be read, is not tilewise's, or cannot be written.
    """
    d = json.loads(item.read_text(encoding="utf-8"))
    if d.get("type") != "Feature" or "tilewise:classes" not in d.get("properties", {}):
        raise ValueError(f"{item} is not a STAC Item tilewise wrote")
    for key, path in assets.items():
        d.setdefault("assets", {})[key] = _asset(key, path, item.parent)
    with staged_file(item, ".part") as tmp:
        tmp.write_text(json.dumps(d, indent=2) + "\n", encoding="utf-8")


class Sidecars(StagedFiles):
    """The ``.qml`` and STAC ``.json`` beside a COG mask, written to temporary names, then published.

    Each is optional (:func:`optional`): one that cannot be written is left
    out with a warning, and :meth:`publish` publishes the others. A file of
    the same name from an earlier run is then removed, since it describes
    another mask.

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
        self.written: set[Path] = set()

    def write(self, mask_file: Path | None = None, extra: dict[str, Path] | None = None) -> None:
        """Write both under their temporary names; one that fails is left out with a warning.

        Args:
            mask_file: where the mask's pixels can be read now (for the STAC footprint).
            extra: more published files to list in the Item (key -> path, see :data:`ASSETS`).
        """
        qml = self.desc.class_names, self.desc.colors
        if optional("QGIS style", self.qml, lambda: self.temp(self.qml).write_text(qml_document(*qml), "utf-8")):
            self.written.add(self.qml)
        assets = {"mask": self.mask, **({"style": self.qml} if self.qml in self.written else {})}
        if self.probs is not None:
            assets["probabilities"] = self.probs
        assets.update(extra or {})

        def item() -> None:
            d = stac_item(self.mask, self.desc, assets, mask_file=mask_file)
            self.temp(self.stac).write_text(json.dumps(d, indent=2) + "\n", encoding="utf-8")

        if optional("STAC Item", self.stac, item):
            self.written.add(self.stac)

    def publish(self) -> tuple[Path, ...]:
        """Move what was written into place (a rename that fails is a warning); returns what was published.

        A file left out removes its namesake from an earlier run.
        """
        published = []
        for what, final in (("QGIS style", self.qml), ("STAC Item", self.stac)):
            tmp = self.temp(final)
            if final in self.written and optional(what, final, partial(os.replace, tmp, final)):
                published.append(final)
                continue
            self.temp(final).unlink(missing_ok=True)
            remove_previous(final)
        return tuple(published)


def remove_previous(final: Path) -> None:
    """Remove ``final`` if an earlier run of tilewise left it (it would describe another mask)."""
    from tiling.formats.geotiff import FORMAT

    if final.is_file() and not final.is_symlink() and FORMAT.owns is not None and FORMAT.owns(final):
        final.unlink()
        log.info("%s: removed the one an earlier run wrote, as it describes another mask", final)
