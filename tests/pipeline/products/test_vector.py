"""--vector: polygons per class, merged across block borders, streamed to a GeoPackage."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.features
import shapely
from affine import Affine

from pipeline.products import polygonize
from tests.conftest import SHARED
from tiling import GeoRef, Window
from tiling.core.labels import LABEL_NODATA
from tiling.errors import ConfigError, SinkError
from tiling.formats.geotiff.writer import CogSink

SPACENET = SHARED / "segmentation" / "spacenet_atlanta_buildings"
UTM = GeoRef(crs="EPSG:32633", transform=(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0), nodata=None)


def _cog(path: Path, labels: np.ndarray, names, georef=UTM, probs: np.ndarray | None = None) -> Path:
    sink = CogSink(path, labels.shape, georef, names, save_probs=probs is not None)
    sink.write(Window((0, 0), labels.shape), labels, probs)
    return sink.finalize()[0]


def _read(gpkg: Path):
    meta, _, geoms, fields = pyogrio.raw.read(gpkg, layer=0)
    columns = dict(zip(meta["fields"], fields))
    return meta, [shapely.from_wkb(g) for g in geoms], columns


def _whole(labels: np.ndarray, value: int, transform: Affine) -> list[shapely.Polygon]:
    """The same class polygonised in one piece, as the reference."""
    return [shapely.geometry.shape(g) for g, v in rasterio.features.shapes(labels, mask=labels == value,
            connectivity=4, transform=transform)]  # fmt: skip


def test_one_object_across_many_blocks_is_one_polygon(tmp_path: Path) -> None:
    labels = np.zeros((200, 260), np.uint8)
    labels[20:180, 20:40] = 1  # a U: two arms joined only at the bottom, in a later row of blocks
    labels[20:180, 200:220] = 1
    labels[160:180, 20:220] = 1
    labels[60:70, 60:180] = 1  # a bar crossing three blocks, with a hole inside the U's reach
    labels[60:70, 100:110] = 0
    labels[60:120, 100:110] = 1  # a hole: the bar and this leg enclose nothing, but the ring below does
    labels[100:120, 60:180] = 1
    labels[60:120, 60:70] = 1
    labels[60:120, 170:180] = 1
    mask = _cog(tmp_path / "m.tif", labels, ["bg", "thing"])
    result = polygonize(mask, tmp_path / "m.gpkg", classes=[1], block=32)
    meta, geoms, cols = _read(result.path)
    reference = _whole(labels, 1, Affine(*UTM.transform))
    assert len(geoms) == len(reference) == 2, "the U and the ring, each whole although cut by 32 px blocks"
    for g in geoms:
        assert any(g.equals(r) for r in reference), "identical to polygonising the scene in one piece"
    ring = max(geoms, key=lambda g: len(g.interiors))
    assert len(ring.interiors) == 2, "holes survive the merge"
    assert sorted(cols["pixels"]) == sorted(round(r.area / 100) for r in reference)
    np.testing.assert_allclose(sorted(cols["area"]), sorted(r.area for r in reference))
    assert set(cols["class_name"]) == {"thing"} and meta["crs"] == "EPSG:32633"


def test_rasterising_the_polygons_back_gives_each_class_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    noise = rng.random((150, 170))
    for _ in range(3):  # smooth, so regions are blobs of many sizes
        noise = (
            noise + np.roll(noise, 1, 0) + np.roll(noise, 1, 1) + np.roll(noise, -1, 0) + np.roll(noise, -1, 1)
        ) / 5
    labels = np.digitize(noise, np.quantile(noise, [0.3, 0.6])).astype(np.uint8)
    labels[:10, :25] = LABEL_NODATA
    mask = _cog(tmp_path / "m.tif", labels, ["a", "b", "c"])
    result = polygonize(mask, tmp_path / "m.gpkg", block=40)
    _, geoms, cols = _read(result.path)
    t = Affine(*UTM.transform)
    for k in range(3):
        mine = [g for g, v in zip(geoms, cols["class"]) if v == k]
        burnt = rasterio.features.rasterize(mine, out_shape=labels.shape, transform=t, fill=0, default_value=1)
        np.testing.assert_array_equal(burnt.astype(bool), labels == k)
        assert len(mine) == len(_whole(labels, k, t)), "no polygon split at a block border"


def test_spacenet_buildings_are_whole_polygons_in_the_source_crs(tmp_path: Path) -> None:
    with rasterio.open(SPACENET / "sample_geotiff.tif") as img, rasterio.open(SPACENET / "sample_fp_mask.tif") as fp:
        georef = GeoRef(img.crs.to_wkt(), tuple(img.transform)[:6], None)
        labels = (fp.read(1) > 0).astype(np.uint8)  # 255 = building -> class 1
    mask = _cog(tmp_path / "atlanta.tif", labels, ["background", "building"], georef)
    result = polygonize(mask, tmp_path / "atlanta.gpkg", classes=[1], block=128)
    meta, geoms, cols = _read(result.path)
    assert meta["crs"] == "EPSG:32616" and meta["geometry_type"] == "Polygon"
    reference = _whole(labels, 1, Affine(*georef.transform))
    assert len(geoms) == len(reference) == result.features > 20
    edges_m = [733601.0 + 0.5 * c for c in range(128, 900, 128)]  # block borders, in map x
    crossing = [g for g in geoms if any(g.bounds[0] < x < g.bounds[2] for x in edges_m)]
    assert len(crossing) >= 5, "the test means something: buildings straddle block borders"
    for g in geoms:
        assert any(g.equals(r) for r in reference), "no building split along a block border"
    np.testing.assert_allclose(sum(cols["area"]), labels.sum() * 0.25)  # 0.5 m pixels
    assert result.peak_open < result.features, "only the objects at the frontier stay open"


def test_mean_probability_simplify_and_an_empty_class(tmp_path: Path) -> None:
    labels = np.zeros((64, 64), np.uint8)
    labels[8:40, 8:40] = 1
    probs = np.zeros((2, 64, 64), np.float32)
    probs[1] = np.where(labels == 1, 0.8, 0.1)
    probs[0] = 1 - probs[1]
    mask = _cog(tmp_path / "m.tif", labels, ["bg", "x"], probs=probs)
    r = polygonize(mask, tmp_path / "m.gpkg", probs=tmp_path / "m.probs.tif", block=16)
    _, geoms, cols = _read(r.path)
    by_class = dict(zip(cols["class"], cols["mean_probability"]))
    assert by_class[1] == pytest.approx(204 / 255) and by_class[0] == pytest.approx(230 / 255)
    assert len(shapely.get_coordinates(geoms[list(cols["class"]).index(1)])) == 5, "a square: 4 corners, closed"
    # simplification in map units (10 m pixels): a staircase loses vertices, the area stays close
    labels2 = np.tri(64, dtype=np.uint8)
    simple = polygonize(_cog(tmp_path / "s.tif", labels2, ["bg", "t"]), tmp_path / "s.gpkg", classes=[1], simplify=15.0)
    exact = polygonize(tmp_path / "s.tif", tmp_path / "e.gpkg", classes=[1])
    (gs,), (ge,) = _read(simple.path)[1], _read(exact.path)[1]
    assert len(shapely.get_coordinates(gs)) < 10 < len(shapely.get_coordinates(ge))
    assert gs.area == pytest.approx(ge.area, rel=0.05)
    empty = polygonize(tmp_path / "s.tif", tmp_path / "none.gpkg", classes=[2])
    assert empty.features == 0 and pyogrio.read_info(empty.path, layer=0)["features"] == 0


def test_bad_arguments_leave_nothing(tmp_path: Path) -> None:
    mask = _cog(tmp_path / "m.tif", np.zeros((8, 8), np.uint8), ["a"])
    with pytest.raises(ConfigError, match="simplify"):
        polygonize(mask, tmp_path / "v.gpkg", simplify=-1)
    assert not list(tmp_path.glob("*.gpkg")) and not list(tmp_path.glob(".v.gpkg*"))


def _sqlite_header(path: Path) -> tuple[bytes, int]:
    """The SQLite header's application_id and user_version (offsets 68 and 60, big-endian)."""
    head = path.read_bytes()[:100]
    return head[68:72], int.from_bytes(head[60:64], "big")


def test_the_geopackage_is_version_1_2_marked_and_styled_with_the_class_colours(tmp_path: Path) -> None:
    # GDAL 3.6 (Debian 12, the analysts' QGIS) warns on every open of the 1.4 newer GDAL writes by default
    labels = np.zeros((64, 64), np.uint8)
    labels[10:30, 10:30] = 1
    labels[40:60, 5:50] = 2
    sink = CogSink(tmp_path / "m.tif", labels.shape, UTM, ["soil", "water", "trees"],
                   class_colors=[(10, 20, 30), (31, 120, 180), (51, 160, 44)])  # fmt: skip
    sink.write(Window((0, 0), labels.shape), labels, None)
    mask = sink.finalize()[0]
    gpkg = polygonize(mask, tmp_path / "m.gpkg").path
    assert _sqlite_header(gpkg) == (b"GPKG", 10200)
    assert pyogrio.read_info(gpkg, layer="m")["dataset_metadata"]["TILEWISE"].startswith("tilewise")
    with sqlite3.connect(gpkg) as db:
        (geom_column,) = db.execute("SELECT column_name FROM gpkg_geometry_columns WHERE table_name='m'").fetchone()
        rows = db.execute(
            "SELECT f_table_catalog, f_table_schema, f_table_name, f_geometry_column, useAsDefault, styleQML "
            "FROM layer_styles"
        ).fetchall()
        kinds = dict(db.execute("SELECT table_name, data_type FROM gpkg_contents").fetchall())
    assert kinds == {"m": "features", "layer_styles": "attributes"}  # registered, as QGIS registers its own
    ((catalog, schema, table, column, default, qml),) = rows
    # what QGIS looks the default style up by: f_table_schema='' AND f_table_name AND f_geometry_column
    assert (catalog, schema, table, column, default) == ("", "", "m", geom_column, 1)
    renderer = ET.fromstring(qml).find("renderer-v2")
    assert (renderer.get("type"), renderer.get("attr")) == ("categorizedSymbol", "class")
    cats = [(c.get("value"), c.get("label")) for c in renderer.iter("category")]
    assert cats == [("0", "soil"), ("1", "water"), ("2", "trees")]
    fills = {s.get("name"): s.find("layer/Option/Option[@name='color']").get("value") for s in renderer.iter("symbol")}
    assert fills == {"0": "10,20,30,255", "1": "31,120,180,255", "2": "51,160,44,255"}


def test_an_existing_file_is_replaced_only_with_overwrite_and_only_if_tilewise_wrote_it(tmp_path: Path) -> None:
    labels = np.zeros((32, 32), np.uint8)
    labels[4:12, 4:12] = 1
    mask = _cog(tmp_path / "m.tif", labels, ["bg", "thing"])
    theirs = tmp_path / "buildings.gpkg"
    pyogrio.raw.write(theirs, np.array(shapely.to_wkb([shapely.box(0, 0, 1, 1)]), dtype=object),
                      [np.array([7], np.int32)], ["id"], layer="buildings", driver="GPKG",
                      geometry_type="Polygon", crs="EPSG:32633")  # fmt: skip
    before = theirs.read_bytes()
    with pytest.raises(ConfigError, match="exists; pass --overwrite"):
        polygonize(mask, theirs)
    with pytest.raises(SinkError, match="not written by tilewise, so it is never replaced"):
        polygonize(mask, theirs, overwrite=True)
    assert theirs.read_bytes() == before
    ours = polygonize(mask, tmp_path / "v.gpkg").path
    with pytest.raises(ConfigError, match="exists; pass --overwrite"):
        polygonize(mask, ours, classes=[0])
    assert polygonize(mask, ours, classes=[0], overwrite=True).features == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["buildings.gpkg", "m.json", "m.qml", "m.tif", "v.gpkg"]
