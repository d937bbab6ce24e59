"""The QGIS style and the STAC Item published beside a COG mask.

The STAC Item is validated with pystac's own JSON schemas for the core Item
(shipped in the package, so nothing is fetched). pystac fetches extension
schemas (classification, projection) from the network, which tests may not
use; their fields are read back through pystac's extension classes instead.
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import rasterio.warp
import shapely
import shapely.geometry
from pystac.extensions.classification import ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.validation.stac_validator import JsonSchemaSTACValidator

from tests.conftest import write_scene
from tests.support.goes import small_goes
from tiling import Window
from tiling.core.labels import class_color
from tiling.core.qa import TilePlan
from tiling.formats import open_sink, open_source
from tiling.formats.base import ModelProvenance, SinkRequest

CLASSES = ("bare soil", "water", "trees")
PROVENANCE = ModelProvenance("DeepLabV3-ResNet101", "w.pth", "f" * 64, "tilewise 0.1.0")


def _mask(tmp_path: Path, crs: str | None = "EPSG:32633", imagery_datetime: str | None = None, **request):
    data = np.full((3, 100, 120), 7, np.uint8)
    src_path = write_scene(tmp_path / "scene.tif", data, crs=crs)
    if imagery_datetime:
        with rasterio.open(src_path, "r+") as ds:
            ds.update_tags(ns="IMAGERY", ACQUISITIONDATETIME=imagery_datetime)
    out = tmp_path / "out" / "mask.tif"
    out.parent.mkdir()
    with open_source(src_path) as src:
        sink = open_sink(
            out, src, None, SinkRequest(CLASSES, provenance=PROVENANCE, allow_unreferenced=True, **request)
        )
    sink.write(Window((0, 0), (100, 120)), np.zeros((100, 120), np.uint8), np.zeros((3, 100, 120), np.float32))
    return src_path, sink.finalize()


def _validate_core(item: dict) -> None:
    # pystac's validator for the core Item, against the schemas shipped in the package (no network)
    JsonSchemaSTACValidator().validate_core(item, pystac.STACObjectType.ITEM, item["stac_version"], "mask.json")


def test_finalize_publishes_the_style_and_the_item_with_the_mask(tmp_path: Path) -> None:
    _, published = _mask(tmp_path, save_probs=True)
    assert [p.name for p in published] == ["mask.tif", "mask.probs.tif", "mask.qml", "mask.json"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in published)


def test_qml_is_a_paletted_style_with_the_class_names_and_the_cog_colours(tmp_path: Path) -> None:
    _, published = _mask(tmp_path)
    assert [p.name for p in published] == ["mask.tif", "mask.qml", "mask.json"]
    text = published[1].read_text()
    assert text.startswith("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>")
    root = ET.fromstring(text)
    assert root.tag == "qgis"
    (renderer,) = root.findall("./pipe/rasterrenderer")
    assert (renderer.get("type"), renderer.get("band")) == ("paletted", "1")
    entries = renderer.findall("./colorPalette/paletteEntry")
    assert [e.get("label") for e in entries] == list(CLASSES)
    with rasterio.open(published[0]) as ds:
        cmap = ds.colormap(1)
    for e in entries:
        k = int(e.get("value"))
        rgb = tuple(int(e.get("color")[i : i + 2], 16) for i in (1, 3, 5))
        assert rgb == class_color(k) == cmap[k][:3] and e.get("alpha") == "255"
    assert 255 not in [int(e.get("value")) for e in entries], "nodata stays transparent"


def test_stac_item_validates_and_describes_the_mask(tmp_path: Path) -> None:
    src_path, published = _mask(tmp_path, save_probs=True)
    d = json.loads(published[3].read_text())
    _validate_core(d)
    item = pystac.Item.from_dict(d)
    assert item.id == "mask" and item.properties["tilewise:datetime_from"] == "processing time"
    assert item.properties["tilewise:weights_sha256"] == "f" * 64
    assert item.properties["tilewise:model"] == "DeepLabV3-ResNet101"
    # footprint and bbox in WGS84 cover the source's bounds
    with rasterio.open(src_path) as ds:
        west, south, east, north = rasterio.warp.transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    assert item.bbox == pytest.approx([west, south, east, north], abs=1e-6)
    lon, lat = np.array(d["geometry"]["coordinates"][0]).T
    assert lon.min() == pytest.approx(west, abs=1e-6) and lat.max() == pytest.approx(north, abs=1e-6)
    # assets resolve to the published files, relative to the Item
    for key, path in {"mask": published[0], "probabilities": published[1], "style": published[2]}.items():
        assert (published[3].parent / item.assets[key].href).resolve() == path.resolve()
    classes = ClassificationExtension.ext(item.assets["mask"]).classes
    assert [(c.value, c.description) for c in classes] == [(0, "bare soil"), (1, "water"), (2, "trees"),
                                                           (255, "no valid source pixel")]  # fmt: skip
    assert classes[0].name == "bare_soil" and classes[1].color_hint == "FF7F0E" and classes[3].nodata
    proj = ProjectionExtension.ext(item)
    assert proj.code == "EPSG:32633" and proj.shape == [100, 120] and proj.transform[:3] == [10.0, 0.0, 500000.0]
    (link,) = [ln for ln in item.links if ln.rel == "derived_from"]
    assert (published[3].parent / link.href).resolve() == src_path.resolve()


def test_stac_datetime_comes_from_the_source_when_it_says(tmp_path: Path) -> None:
    _, published = _mask(tmp_path, imagery_datetime="2021:06:15 10:30:00")
    d = json.loads(published[-1].read_text())
    _validate_core(d)
    assert d["properties"]["datetime"] == "2021-06-15T10:30:00Z"
    assert d["properties"]["tilewise:datetime_from"] == "IMAGERY:ACQUISITIONDATETIME"
    assert d["properties"]["created"] != d["properties"]["datetime"]


def test_stac_item_of_a_mask_without_crs_has_no_footprint(tmp_path: Path) -> None:
    _, published = _mask(tmp_path, crs=None)
    d = json.loads(published[-1].read_text())
    _validate_core(d)
    assert d["geometry"] is None and "bbox" not in d and "proj:code" not in d["properties"]


def _goes_mask(tmp_path: Path) -> tuple[Path, tuple[Path, ...]]:
    """A COG mask of the small GOES full disk: labels 0 on the Earth, 255 (nodata) in space."""
    src_path = small_goes(tmp_path / "goes.tif")
    out = tmp_path / "out" / "goes_mask.tif"
    out.parent.mkdir()
    with open_source(src_path) as src:
        sink = open_sink(out, src, None, SinkRequest(CLASSES, provenance=PROVENANCE))
        _, valid = src.read(Window((0, 0), src.shape))
    sink.write(Window((0, 0), valid.shape), np.where(valid, 0, 255).astype(np.uint8), None)
    return src_path, sink.finalize()


def test_a_geostationary_full_disk_gets_the_earths_outline_as_its_footprint(tmp_path: Path) -> None:
    # the grid's corners look past the Earth: GDAL cannot transform its outline, so the valid data's is used
    _, published = _goes_mask(tmp_path)
    assert [p.name for p in published] == ["goes_mask.tif", "goes_mask.qml", "goes_mask.json"]
    d = json.loads(published[-1].read_text())
    _validate_core(d)
    footprint = shapely.geometry.shape(d["geometry"])
    assert footprint.is_valid and footprint.geom_type == "Polygon"
    west, south, east, north = d["bbox"]
    assert -180 <= west < east <= 180 and -90 <= south < north <= 90
    assert footprint.bounds == pytest.approx(tuple(d["bbox"]), abs=1e-6)
    # GOES-16 at 75.2 W sees about 81 degrees around its sub-satellite point
    assert footprint.contains(shapely.Point(-75, 0)) and footprint.contains(shapely.Point(-75, 60))
    assert west < -140 and east > -10 and south < -60 and north > 60
    assert not footprint.contains(shapely.Point(20, 0)) and not footprint.contains(shapely.Point(-170, 0))
    assert "wkt2" not in d["properties"] or "Geostationary" in d["properties"]["proj:wkt2"]


def test_a_product_that_fails_costs_the_mask_nothing_one_warning_line(tmp_path: Path, caplog) -> None:
    # a folder where the STAC Item goes: its rename fails after the mask is ready
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mask.json").mkdir()
    src_path = write_scene(tmp_path / "scene.tif", np.full((3, 64, 64), 7, np.uint8))
    with open_source(src_path) as src:
        sink = open_sink(tmp_path / "out" / "mask.tif", src, None, SinkRequest(CLASSES, qa=True,
                         plan=TilePlan(32, 0.25, "shift", "gaussian")))  # fmt: skip
    sink.write(Window((0, 0), (64, 64)), np.zeros((64, 64), np.uint8), None)
    with caplog.at_level(logging.WARNING):
        published = sink.finalize()
    assert [p.name for p in published] == ["mask.tif", "mask.qml", "mask.qa.tif", "mask.qa.json", "mask.qa.qml"]
    with rasterio.open(published[0]) as ds:
        assert ds.read(1).max() == 0
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    line = warning.getMessage()
    assert "\n" not in line and "mask.json: STAC Item not written" in line and "the mask is published" in line
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [p.name for p in published] + ["mask.json"]
    ), "no temporary file left"
