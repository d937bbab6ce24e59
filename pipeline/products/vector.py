"""Polygons of a finished COG mask, per class, for GIS: streamed, merged across block borders.

The mask is read back window by window (``block`` pixels square, aligned to
its storage tiles). Each block is polygonised with
:func:`rasterio.features.shapes` (4-connected regions, in pixel
coordinates, so vertices on a shared border are exact integers in both
blocks), and the pieces are joined across block borders with a union-find:
two pieces of the same class are one object when pixels on either side of
the border touch. An object is finished when no piece of it touches the
bottom edge of the current row of blocks (the frontier): then its pieces
are unioned (shapely), moved to map coordinates, optionally simplified and
appended to the layer. Memory holds one row of blocks' pieces and the
objects still open at the frontier, never the whole scene; layer writes
are streamed with pyogrio, a batch per row of blocks.

Every feature has ``class`` (the label value), ``class_name``, ``area`` (map
units squared: the pixel count times the pixel area, before
simplification), ``pixels``, and ``mean_probability`` (of its class over its
pixels, from the probabilities COG when given; null otherwise).

The file is a GeoPackage 1.2 (:data:`GPKG_VERSION`): the GDAL of Debian 12
(3.6), which many analysts' QGIS runs on, warns on every open of the 1.4
that newer GDAL writes by default and its validator rejects it. It carries
the layer's QGIS style in a ``layer_styles`` table (QGIS applies it when
the layer is added: one colour and the class name per class), and
tilewise's mark in its metadata (so ``--overwrite`` may replace it, and
nothing else). It is written under a temporary name
(:func:`tiling.formats.base.temp_name`) and renamed into place when complete.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
import rasterio.features
import rasterio.windows
import shapely
import shapely.affinity
import shapely.geometry
from affine import Affine
from rasterio.io import DatasetReader
from tqdm.auto import tqdm

from pipeline.products.files import MARK_KEY, check_product_path
from tiling.core import staging
from tiling.core.labels import LABEL_NODATA, RGB, class_color
from tiling.errors import ConfigError, SinkError
from tiling.formats.base import temp_name
from tiling.version import mark

__all__ = ["DEFAULT_BLOCK", "GPKG_VERSION", "VectorResult", "polygonize", "vector_qml_document"]

log = logging.getLogger(__name__)

#: Edge of the windows the mask is read and polygonised in (a multiple of the COG's 256 px tiles).
DEFAULT_BLOCK = 1024
#: GeoPackage version written: 1.2 opens cleanly with GDAL 3.6 (Debian 12) and every QGIS 3.
GPKG_VERSION = "1.2"
#: The fields of QGIS's ``layer_styles`` table, as QGIS creates it (``QgsOgrProviderMetadata::saveStyle``).
_STYLE_FIELDS = ["f_table_catalog", "f_table_schema", "f_table_name", "f_geometry_column", "styleName",
                 "styleQML", "styleSLD", "useAsDefault", "description", "owner", "ui", "update_time"]  # fmt: skip
_FIELDS = ["class", "class_name", "area", "pixels", "mean_probability"]
#: One feature: geometry, class value, class name, area, pixels, mean probability.
Row = tuple[shapely.Geometry, int, str, float, int, float]


@dataclass(frozen=True)
class VectorResult:
    """What :func:`polygonize` wrote.

    Attributes:
        path: the GeoPackage.
        layer: its layer name.
        features: polygons written.
        seconds: wall time.
        peak_open: the most objects open at the frontier at once (the memory bound).
    """

    path: Path
    layer: str
    features: int
    seconds: float
    peak_open: int


@dataclass
class _Group:
    """Pieces of one object, merged by the union-find: pixel-space polygons and running sums."""

    value: int
    members: list[int]
    geoms: list[shapely.Polygon]
    pixels: int
    prob_sum: float


@dataclass
class _Frontier:
    """Union-find over piece ids, with the group of every root still open."""

    parent: dict[int, int] = field(default_factory=dict)
    groups: dict[int, _Group] = field(default_factory=dict)

    def add(self, pid: int, group: _Group) -> None:
        self.parent[pid] = pid
        self.groups[pid] = group

    def find(self, pid: int) -> int:
        root = pid
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[pid] != root:  # path compression
            self.parent[pid], pid = root, self.parent[pid]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        ga, gb = self.groups[ra], self.groups[rb]
        if len(ga.members) < len(gb.members):
            ra, rb, ga, gb = rb, ra, gb, ga
        self.parent[rb] = ra
        ga.members += gb.members
        ga.geoms += gb.geoms
        ga.pixels += gb.pixels
        ga.prob_sum += gb.prob_sum
        del self.groups[rb]

    def pop_closed(self, still_open: set[int]) -> list[_Group]:
        """Remove and return every group whose root is not in ``still_open``."""
        done = [r for r in self.groups if r not in still_open]
        out = []
        for r in done:
            g = self.groups.pop(r)
            for m in g.members:
                del self.parent[m]
            out.append(g)
        return out


def _class_names(ds: rasterio.io.DatasetReader, given: Sequence[str] | None) -> list[str]:
    if given:
        return list(given)
    tagged = ds.tags().get("CLASS_NAMES")
    if tagged:
        try:
            return list(json.loads(tagged))
        except ValueError:
            pass
    return []


def _style_classes(
    ds: DatasetReader, names: Sequence[str], given: Sequence[RGB] | None, seen: set[int]
) -> list[tuple[int, str, RGB]]:
    """``(value, name, colour)`` of every class the style shows: the named ones, else those written.

    Colours are the given ones, else the mask's colour table, else the default palette.
    """
    values = range(len(names)) if names else sorted(seen)
    try:
        table = ds.colormap(1)
    except ValueError:  # no colour table
        table = {}
    out = []
    for k in values:
        color = tuple(given[k][:3]) if given and k < len(given) else tuple(table.get(k, class_color(k))[:3])
        out.append((k, names[k] if k < len(names) else f"class_{k}", color))
    return out  # type: ignore[return-value]


def vector_qml_document(classes: Sequence[tuple[int, str, RGB]]) -> str:
    """A QGIS style for the polygons: categories on ``class``, one fill colour and label (the name) each.

    Args:
        classes: ``(value, name, (r, g, b))`` per class.
    """
    root = ET.Element("qgis", version="3.22.0", styleCategories="Symbology")
    renderer = ET.SubElement(root, "renderer-v2", type="categorizedSymbol", attr="class", forceraster="0",
                             symbollevels="0", enableorderby="0")  # fmt: skip
    categories = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for k, name, (r, g, b) in classes:
        ET.SubElement(categories, "category", render="true", symbol=str(k), value=str(k), label=name)
        symbol = ET.SubElement(symbols, "symbol", type="fill", name=str(k), alpha="1", clip_to_extent="1",
                               force_rhr="0")  # fmt: skip
        layer = ET.SubElement(symbol, "layer", {"class": "SimpleFill", "enabled": "1", "locked": "0", "pass": "0"})
        props = {"color": f"{r},{g},{b},255", "style": "solid", "outline_color": "35,35,35,255",
                 "outline_style": "solid", "outline_width": "0.26", "outline_width_unit": "MM"}  # fmt: skip
        options = ET.SubElement(layer, "Option", type="Map")  # QGIS 3.16 and later
        for key, value in props.items():
            ET.SubElement(options, "Option", name=key, value=value, type="QString")
        for key, value in props.items():  # earlier QGIS 3
            ET.SubElement(layer, "prop", k=key, v=value)
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(root, encoding="unicode")


def _write_style(path: Path, layer: str, qml: str) -> None:
    """Store ``qml`` as the default style of ``layer`` in the GeoPackage's ``layer_styles`` table (as QGIS does)."""
    values: list[object] = ["", "", layer, "geom", layer[:30], qml, "", True, "written by tilewise", "", "",
                            np.datetime64(dt.datetime.now(dt.timezone.utc).replace(tzinfo=None), "ms")]  # fmt: skip
    arrays = [np.array([v], dtype=bool if isinstance(v, bool) else object) for v in values]
    arrays[-1] = np.array([values[-1]], dtype="datetime64[ms]")
    pyogrio.raw.write(path, None, arrays, _STYLE_FIELDS, layer="layer_styles", driver="GPKG", append=True,
                      layer_options={"FID": "id"})  # fmt: skip


def _blocks(height: int, width: int, block: int) -> Iterator[tuple[int, list[rasterio.windows.Window]]]:
    """Rows of block windows, top to bottom, each left to right."""
    for r in range(0, height, block):
        h = min(block, height - r)
        yield r + h, [rasterio.windows.Window(c, r, min(block, width - c), h) for c in range(0, width, block)]


class _LayerWriter:
    """Appends batches of features to one GeoPackage layer (the file is created by the first batch,
    as a GeoPackage :data:`GPKG_VERSION` carrying tilewise's mark).
    """

    def __init__(self, path: Path, layer: str, crs: str | None) -> None:
        self.path, self.layer, self.crs = path, layer, crs
        self.written = 0
        self.values: set[int] = set()  # the class values written

    def write(self, rows: list[Row]) -> None:
        if not rows and self.written:
            return
        geoms, values, names, areas, pixels, probs = zip(*rows) if rows else ((),) * 6
        pyogrio.raw.write(
            self.path, np.array(shapely.to_wkb(list(geoms)) if rows else [], dtype=object),
            [np.asarray(values, np.int32), np.asarray(names, object), np.asarray(areas, np.float64),
             np.asarray(pixels, np.int64), np.asarray(probs, np.float64)],
            _FIELDS, layer=self.layer, driver="GPKG", geometry_type="Polygon", crs=self.crs,
            append=self.path.exists(), nan_as_null=True,
            **({} if self.path.exists() else {"dataset_options": {"VERSION": GPKG_VERSION},
                                               "dataset_metadata": {MARK_KEY: mark()}}),
        )  # fmt: skip
        self.written += len(rows)
        self.values.update(int(v) for v in values)


def polygonize(
    mask: str | Path,
    out: str | Path,
    probs: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    classes: Sequence[int] | None = None,
    simplify: float | None = None,
    block: int = DEFAULT_BLOCK,
    layer: str | None = None,
    progress: bool = False,
    class_colors: Sequence[RGB] | None = None,
    overwrite: bool = False,
) -> VectorResult:
    """Write the polygons of a COG mask to a GeoPackage, in the mask's CRS, with a QGIS style.

    Args:
        mask: a single-band label raster (a tilewise COG: class k is value k, 255 nodata).
        out: the ``.gpkg`` to write; it appears only when complete.
        probs: the probabilities COG (one band per class, x255) for ``mean_probability``.
        class_names: names per class value; the mask's ``CLASS_NAMES`` tag when None.
        classes: the class values to polygonise; every class when None.
        simplify: Douglas-Peucker tolerance in map units, per polygon
            (topology of each polygon kept; shared edges of neighbours may
            no longer coincide); None keeps the exact pixel outlines.
        block: edge of the windows read at a time, pixels.
        layer: the layer name; the mask's stem when None.
        progress: show a progress bar over rows of blocks.
        class_colors: one RGB colour per class for the layer's style; the
            mask's colour table when None.
        overwrite: replace an existing ``out`` that tilewise wrote (never another file).

    Raises:
        ConfigError: on a bad tolerance or block size, or an existing ``out`` without ``overwrite``.
        SinkError: if ``out`` cannot be written, or exists and tilewise did not write it.
    """
    t0 = time.perf_counter()
    mask, out = Path(mask), Path(out)
    if simplify is not None and not simplify >= 0:
        raise ConfigError(f"simplify: the tolerance must be >= 0 map units, got {simplify!r}")
    if block < 1:
        raise ConfigError(f"block: must be a positive number of pixels, got {block!r}")
    if not out.parent.is_dir():
        raise SinkError(f"{out}: cannot write output, folder {out.parent} does not exist")
    check_product_path(out, overwrite)
    layer = layer or mask.name.split(".")[0]
    staging.remove_stale(out.parent, f".{out.name}.")  # what a killed run left
    tmp = temp_name(out, ".part.gpkg")
    try:
        with rasterio.open(mask) as ds, rasterio.open(probs) if probs else _Nothing() as pds:
            writer = _LayerWriter(tmp, layer, ds.crs.to_wkt() if ds.crs else None)
            names = _class_names(ds, class_names)
            peak = _stream(ds, pds, writer, names, classes, simplify, block, progress)
            _write_style(tmp, layer, vector_qml_document(_style_classes(ds, names, class_colors, writer.values)))
        os.replace(tmp, out)
    except BaseException:
        for leftover in tmp.parent.glob(f"{tmp.name}*"):  # with SQLite's -journal or -wal beside it
            leftover.unlink(missing_ok=True)
        raise
    finally:
        staging.release(tmp)
    result = VectorResult(out, layer, writer.written, time.perf_counter() - t0, peak)
    log.info("%s: %d polygons in %.1f s", out, result.features, result.seconds)
    return result


class _Nothing:
    """A context manager standing for an absent dataset."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _stream(
    ds: DatasetReader,
    pds: DatasetReader | None,
    writer: _LayerWriter,
    names: list[str],
    classes: Sequence[int] | None,
    simplify: float | None,
    block: int,
    progress: bool,
) -> int:
    """Polygonise ``ds`` row of blocks by row of blocks; returns the peak number of open objects."""
    height, width = ds.height, ds.width
    nodata = int(ds.nodata) if ds.nodata is not None else LABEL_NODATA
    wanted = None if classes is None else np.isin(np.arange(256), list(classes))
    to_map = ds.transform
    pixel_area = abs(to_map.a * to_map.e - to_map.b * to_map.d)
    frontier = _Frontier()
    above = np.full(width, -1, np.int64)  # piece id of each pixel on the last finished row, -1 for none
    next_id = 0
    peak = 0
    rows = list(_blocks(height, width, block))
    for bottom, windows in tqdm(rows, desc=writer.path.name, unit="row", disable=not progress):
        below = np.full(width, -1, np.int64)
        left: np.ndarray | None = None
        for w in windows:
            labels = ds.read(1, window=w)
            valid = labels != nodata
            if wanted is not None:
                valid &= wanted[labels]
            ids, next_id = _pieces(labels, valid, w, pds, frontier, next_id)
            c0, c1 = int(w.col_off), int(w.col_off + w.width)
            _join(frontier, ids[0], above[c0:c1])
            if left is not None:
                _join(frontier, ids[:, 0], left)
            left = ids[:, -1]
            below[c0:c1] = ids[-1]
        above = below
        still_open = {frontier.find(int(p)) for p in np.unique(below[below >= 0])} if bottom < height else set()
        peak = max(peak, len(frontier.groups))
        finished = frontier.pop_closed(still_open)
        writer.write([row for g in finished for row in _features(g, names, to_map, pixel_area, simplify, pds)])
    if writer.written == 0:
        writer.write([])  # an empty layer, so the file says "no polygons" rather than not existing
    return peak


def _pieces(
    labels: np.ndarray,
    valid: np.ndarray,
    w: rasterio.windows.Window,
    pds: DatasetReader | None,
    frontier: _Frontier,
    next_id: int,
) -> tuple[np.ndarray, int]:
    """Polygonise one block: register its pieces; returns the piece id per pixel (-1 outside any) and the next id."""
    shift = Affine.translation(int(w.col_off), int(w.row_off))
    shapes = list(rasterio.features.shapes(labels, mask=valid, connectivity=4, transform=shift))
    ids = np.full(labels.shape, -1, np.int64)
    if not shapes:
        return ids, next_id
    local = rasterio.features.rasterize(
        ((g, i + 1) for i, (g, _) in enumerate(shapes)), out_shape=labels.shape, transform=shift, fill=0,
        dtype="int32",
    )  # fmt: skip
    pixels = np.bincount(local.ravel(), minlength=len(shapes) + 1)
    prob_sum: np.ndarray = np.zeros(len(shapes) + 1)
    if pds is not None:
        band = np.minimum(labels, pds.count - 1).astype(np.intp)
        p = pds.read(window=w)
        own = np.take_along_axis(p, band[np.newaxis], 0)[0]
        prob_sum = np.bincount(local.ravel(), weights=own.ravel(), minlength=len(shapes) + 1)
    for i, (g, v) in enumerate(shapes):
        frontier.add(next_id + i, _Group(int(v), [next_id + i], [shapely.geometry.shape(g)],
                                         int(pixels[i + 1]), float(prob_sum[i + 1])))  # fmt: skip
    ids[local > 0] = local[local > 0] - 1 + next_id
    return ids, next_id + len(shapes)


def _join(frontier: _Frontier, here: np.ndarray, there: np.ndarray) -> None:
    """Union the pieces on either side of a border: same class on both sides means one object.

    ``here`` and ``there`` are the piece ids of the pixels facing each other
    across the border (-1 for none); a piece's group knows its class.
    """
    both = (here >= 0) & (there >= 0)
    if not both.any():
        return
    pairs = np.unique(np.stack([here[both], there[both]], axis=1), axis=0)
    for a, b in pairs:
        ga = frontier.groups[frontier.find(int(a))]
        gb = frontier.groups[frontier.find(int(b))]
        if ga.value == gb.value:
            frontier.union(int(a), int(b))


def _features(
    g: _Group, names: list[str], to_map: Affine, pixel_area: float, simplify: float | None, pds: DatasetReader | None
) -> Iterator[Row]:
    """The finished object as layer rows (one, unless its union falls apart in parts)."""
    merged = shapely.union_all(g.geoms) if len(g.geoms) > 1 else g.geoms[0]
    merged = shapely.simplify(merged, 0.0)  # drop the vertices block borders left on straight edges
    on_map = shapely.affinity.affine_transform(merged, [to_map.a, to_map.b, to_map.d, to_map.e, to_map.c, to_map.f])
    if simplify:
        on_map = shapely.simplify(on_map, simplify, preserve_topology=True)
    name = names[g.value] if g.value < len(names) else f"class_{g.value}"
    mean = g.prob_sum / g.pixels / 255.0 if pds is not None and g.pixels else float("nan")
    parts = list(on_map.geoms) if isinstance(on_map, shapely.MultiPolygon) else [on_map]
    if len(parts) > 1:  # pieces joined only at a corner cannot happen with 4-connectivity; be safe anyway
        log.warning("an object of class %s fell apart into %d parts; writing each", name, len(parts))
    for part in parts:
        share = part.area / on_map.area if len(parts) > 1 and on_map.area else 1.0
        yield part, g.value, name, g.pixels * pixel_area * share, round(g.pixels * share), mean
