"""The analyst outputs through the CLI: sidecars, --vector, --quicklook, and flags refused where they do not apply."""

from __future__ import annotations

import json
import os
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyogrio
import pystac
import pytest
import rasterio
import shapely
import shapely.geometry
from PIL import Image
from pystac.extensions.classification import ClassificationExtension
from pystac.validation.stac_validator import JsonSchemaSTACValidator

from models import build_model
from models.train import ExportInfo, export_model
from tests.conftest import SHARED, digest, write_scene
from tests.support.cli import one_error, run
from tests.support.goes import small_goes
from tests.support.models import pointwise
from tiling.core import staging
from tiling.core.labels import class_color, hex_color
from tiling.formats.base import temp_name

CT5N = SHARED / "dicom" / "series" / "pydicom_98892001_CT5N"


def test_cog_run_with_vector_and_quicklook(ray_session, tmp_path) -> None:
    data = np.random.default_rng(0).integers(1, 255, (3, 64, 64), dtype=np.uint8)
    src = write_scene(tmp_path / "scene.tif", data)
    out, gpkg = tmp_path / "m.tif", tmp_path / "m.gpkg"
    result = run("infer", src, "--out", out, "--tile", 64, "--backbone", "resnet50", "--classes", 2,
                 "--class-names", "ground,roof", "--vector", gpkg, "--simplify", 0, "--quicklook", "--no-progress")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"polygons: {gpkg}" in result.output and f"quicklook: {tmp_path / 'm.quicklook.png'}" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m.gpkg", "m.json", "m.qml", "m.quicklook.png", "m.tif", "scene.tif"
    ]  # fmt: skip
    info = pyogrio.read_info(gpkg, layer="m")
    assert info["crs"] == "EPSG:32633" and info["features"] > 0
    meta, _, _, fields = pyogrio.raw.read(gpkg, layer="m", read_geometry=False)
    assert set(fields[list(meta["fields"]).index("class_name")]) <= {"ground", "roof"}
    item = json.loads((tmp_path / "m.json").read_text())
    assert item["properties"]["tilewise:model"] == "DeepLabV3-ResNet50" and item["assets"]["mask"]["href"] == "./m.tif"


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--seg-type", "labelmap"], ["seg_type (--seg-type) does not apply to a cog output", "DICOM (dicom-seg)"]),
        (["--seg-codes", __file__], ["seg_codes (--seg-codes) does not apply to a cog output"]),
        (["--simplify", "2"], ["--simplify) applies to the polygons of --vector"]),
        (["--vector-classes", "1"], ["--vector-classes) applies to the polygons of --vector"]),
        (["--vector", "{tmp}/no/such/v.gpkg"], ["folder", "does not exist"]),
        (["--vector", "{tmp}"], ["--vector names a folder"]),
        (["--vector", "{tmp}/v.gpkg", "--simplify", "-1"], ["simplify: the tolerance must be >= 0"]),
    ],
)
def test_cog_flags_refused_before_any_work(tmp_path, args, needles) -> None:
    src = write_scene(tmp_path / "scene.tif", np.ones((3, 32, 32), np.uint8))
    out = tmp_path / "m.tif"
    result = run("infer", src, "--out", out, *[a.format(tmp=tmp_path) for a in args])
    line = one_error(result)
    for needle in needles:
        assert needle in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--vector", "{tmp}/v.gpkg"], ["seg.dcm: --vector makes polygons of a map mask", "not of a dicom-seg mask"]),
        (["--seg-type", "fractional"], ["Invalid value for '--seg-type'"]),
        (["--seg-codes", "{tmp}/none.yaml"], ["seg_codes: {tmp}/none.yaml: no such file"]),
    ],
)
def test_dicom_flags_refused_before_any_work(tmp_path, args, needles) -> None:
    out = tmp_path / "seg.dcm"
    result = run("infer", CT5N, "--out", out, *[a.format(tmp=tmp_path) for a in args])
    if "Invalid value" in needles[0]:  # click's own refusal of a choice
        assert result.exit_code == 2 and needles[0] in result.output
    else:
        line = one_error(result)
        for needle in needles:
            assert needle.format(tmp=tmp_path) in line, line
    assert list(tmp_path.iterdir()) == []


def test_vector_in_a_batch_needs_a_folder(tmp_path) -> None:
    a = write_scene(tmp_path / "a.tif", np.ones((3, 32, 32), np.uint8))
    b = write_scene(tmp_path / "b.tif", np.ones((3, 32, 32), np.uint8))
    masks = tmp_path / "masks"
    masks.mkdir()
    line = one_error(run("infer", a, b, "--out", masks, "--vector", tmp_path / "v.gpkg"))
    assert "with several sources, --vector must be an existing folder" in line
    assert list(masks.iterdir()) == []


# --- a real scene whose corners are off the globe; products that fail; products of an export ---------------


def _item(path: Path) -> dict:
    d = json.loads(path.read_text())
    JsonSchemaSTACValidator().validate_core(d, pystac.STACObjectType.ITEM, d["stac_version"], str(path))
    return d


def _footprint_ok(d: dict) -> shapely.Geometry:
    footprint = shapely.geometry.shape(d["geometry"])
    west, south, east, north = d["bbox"]
    assert footprint.is_valid and not footprint.is_empty
    assert -180 <= west < east <= 180 and -90 <= south < north <= 90
    return footprint


def test_a_geostationary_full_disk_through_infer_gets_its_mask_products_and_footprint(ray_session, tmp_path) -> None:
    # the corners of a GOES full disk are off the Earth: the STAC footprint once killed the run here
    src = small_goes(tmp_path / "goes.tif")
    out, gpkg = tmp_path / "m.tif", tmp_path / "m.gpkg"
    result = run("infer", src, "--out", out, "--tile", 64, "--vector", gpkg, "--quicklook", "--no-progress",
                 obj={"model": pointwise()})  # fmt: skip
    assert result.exit_code == 0 and "Traceback" not in result.output and "Warning" not in result.output, result.output
    with rasterio.open(out) as ds:
        labels = ds.read(1)
    assert (labels == 255).any() and (labels != 255).any(), "space is nodata, the Earth is segmented"
    d = _item(tmp_path / "m.json")
    assert _footprint_ok(d).contains(shapely.Point(-75, 0))
    # the products made after the mask are listed in its Item, hrefs relative to it
    assert {"mask", "style", "polygons", "quicklook"} <= set(d["assets"])
    for key, path in {"polygons": gpkg, "quicklook": tmp_path / "m.quicklook.png"}.items():
        assert (tmp_path / d["assets"][key]["href"]).resolve() == path.resolve()
    assert d["assets"]["polygons"]["type"] == "application/geopackage+sqlite3"


def test_a_product_that_fails_leaves_the_mask_and_one_warning_line(ray_session, tmp_path, monkeypatch) -> None:
    def fails(*args, **kwargs):  # stands for any failure of the quicklook (a full disk, a bug)
        raise OSError("No space left on device")

    monkeypatch.setattr("pipeline.products.make.quicklook", fails)
    src = write_scene(tmp_path / "scene.tif", np.random.default_rng(0).integers(1, 255, (3, 64, 64), dtype=np.uint8))
    out, gpkg = tmp_path / "m.tif", tmp_path / "m.gpkg"
    result = run("infer", src, "--out", out, "--tile", 64, "--vector", gpkg, "--quicklook", "--no-progress",
                 obj={"model": pointwise()})  # fmt: skip
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("Warning:")]
    assert "m.quicklook.png: quicklook not written (OSError: No space left on device)" in line
    assert out.exists() and gpkg.exists() and not (tmp_path / "m.quicklook.png").exists()
    assert set(_item(tmp_path / "m.json")["assets"]) == {"mask", "style", "polygons"}, "only what exists is listed"


def test_a_batch_with_a_geostationary_scene_and_a_normal_one_publishes_both(ray_session, tmp_path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    small_goes(archive / "goes.tif")
    write_scene(archive / "utm.tif", np.random.default_rng(1).integers(1, 255, (3, 64, 64), dtype=np.uint8))
    result = run("batch", archive, "--out", tmp_path / "out", "--tile", 64, "--no-progress",
                 obj={"model": pointwise()})  # fmt: skip
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    for stem in ("goes", "utm"):
        assert (tmp_path / "out" / f"{stem}_mask.tif").exists()
        _footprint_ok(_item(tmp_path / "out" / f"{stem}_mask.json"))


@pytest.fixture(scope="module")
def export4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-class export named by its training run: 1 band (band 2 of a scene), MobileNetV3."""
    path = tmp_path_factory.mktemp("export") / "model.pt"
    info = ExportInfo("mobilenet_v3_large", 4, ("water", "vegetation", "roofs", "roads"), 1, (100.0,), (20.0,),
                      bands=(2,), tile=64)  # fmt: skip
    return export_model(path, build_model("mobilenet_v3_large", 4, 1), info)


def test_an_exports_class_names_and_the_users_colours_reach_every_product(ray_session, tmp_path, export4) -> None:
    names = ["water", "vegetation", "roofs", "roads"]
    data = np.random.default_rng(2).integers(1, 255, (3, 96, 96), dtype=np.uint8)
    data[1, :, 48:] = 250  # two very different halves, so more than one class shows
    src = write_scene(tmp_path / "scene.tif", data)
    out, gpkg = tmp_path / "m.tif", tmp_path / "m.gpkg"
    result = run("infer", src, "--out", out, "--weights", export4, "--tile", 64, "--vector", gpkg, "--quicklook",
                 "--class-colors", "vegetation=#33a02c,water=#1f78b4", "--no-progress")  # fmt: skip
    assert result.exit_code == 0, result.output
    colors = [(31, 120, 180), (51, 160, 44), class_color(2), class_color(3)]  # the rest keep the palette
    with rasterio.open(out) as ds:
        assert json.loads(ds.tags()["CLASS_NAMES"]) == names
        assert [ds.colormap(1)[k][:3] for k in range(4)] == colors
    entries = ET.parse(tmp_path / "m.qml").getroot().findall("./pipe/rasterrenderer/colorPalette/paletteEntry")
    assert [(e.get("label"), e.get("color")) for e in entries] == [(n, hex_color(c)) for n, c in zip(names, colors)]
    item = pystac.Item.from_dict(_item(tmp_path / "m.json"))
    classes = ClassificationExtension.ext(item.assets["mask"]).classes[:4]
    assert [(c.description, c.color_hint) for c in classes] == [
        (n, hex_color(c)[1:].upper()) for n, c in zip(names, colors)
    ]
    # the polygons: class names from the export (not class_0..3) and a style in the same colours
    meta, _, _, fields = pyogrio.raw.read(gpkg, layer="m", read_geometry=False)
    written = set(fields[list(meta["fields"]).index("class_name")])
    assert written and written <= set(names)
    with sqlite3.connect(gpkg) as db:
        (qml,) = db.execute("SELECT styleQML FROM layer_styles WHERE f_table_name='m'").fetchone()
    style = ET.fromstring(qml)
    assert [c.get("label") for c in style.iter("category")] == names
    fills = [s.find("layer/Option/Option[@name='color']").get("value") for s in style.iter("symbol")]
    assert fills == [f"{r},{g},{b},255" for r, g, b in colors]
    # the quicklook's legend: all four classes, in their colours
    img = np.asarray(Image.open(tmp_path / "m.quicklook.png").convert("RGB")).astype(int)
    legend = img[:, 96 + 10 : 96 + 24].reshape(-1, 3)
    for c in colors:
        assert (np.abs(legend - np.array(c)).max(axis=1) == 0).any(), c


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--class-colors", "sky=#000000"], "class_colors: 'sky' is not a class; the classes are ground, roof"),
        (["--class-colors", "ground=#12345"], "class_colors: '#12345' is not a colour; write it as #rrggbb"),
        (["--class-colors", "#000000,#ffffff,#ff0000"], "class_colors: 3 colours for 2 classes (ground, roof)"),
        (["--class-colors", "ground=#000000,#ffffff"], "mixes name=#rrggbb entries with bare colours"),
    ],
)
def test_class_colours_are_checked_before_any_work(tmp_path, args, needle) -> None:
    src = write_scene(tmp_path / "scene.tif", np.ones((3, 32, 32), np.uint8))
    line = one_error(run("infer", src, "--out", tmp_path / "m.tif", "--class-names", "ground,roof", *args))
    assert needle in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


# --- every product path goes through the mask's output planning ---------------------------------------------


def _theirs_gpkg(path: Path) -> Path:
    """A user's GeoPackage: 43 buildings."""
    boxes = [shapely.box(i, 0, i + 0.5, 1) for i in range(43)]
    pyogrio.raw.write(path, np.array(shapely.to_wkb(boxes), dtype=object), [np.arange(43, dtype=np.int32)], ["id"],
                      layer="buildings", driver="GPKG", geometry_type="Polygon", crs="EPSG:32633")  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--vector", "{tmp}/scene.tif"], "scene.tif: the output is the input"),
        (["--vector", "{tmp}/m.tif"], "m.tif: {tmp}/scene.tif would write it twice, as its mask and as its --vector"),
        (["--vector", "{tmp}/m.json"], "m.json: {tmp}/scene.tif would write it twice, as a file beside its mask"),
        (["--vector", "{tmp}/buildings.gpkg"], "buildings.gpkg: exists; pass --overwrite to replace it"),
        (["--vector", "{tmp}/buildings.gpkg", "--overwrite"], "buildings.gpkg: exists and was not written by tilewise"),
        (["--quicklook"], "m.quicklook.png: exists; pass --overwrite to replace it"),
        (["--quicklook", "--overwrite"], "m.quicklook.png: exists and was not written by tilewise"),
    ],
)
def test_a_product_path_is_refused_where_it_would_destroy_data(tmp_path, args, needle) -> None:
    src = write_scene(tmp_path / "scene.tif", np.ones((3, 32, 32), np.uint8))
    _theirs_gpkg(tmp_path / "buildings.gpkg")
    Image.new("RGB", (4, 4), (9, 9, 9)).save(tmp_path / "m.quicklook.png")  # the user's own picture
    before = {p.name: digest(p) for p in tmp_path.iterdir()}
    line = one_error(run("infer", src, "--out", tmp_path / "m.tif", *[a.format(tmp=tmp_path) for a in args]))
    assert needle.format(tmp=tmp_path) in line, line
    assert {p.name: digest(p) for p in tmp_path.iterdir()} == before, "nothing written, nothing replaced"
    assert pyogrio.read_info(tmp_path / "buildings.gpkg", layer="buildings")["features"] == 43


def test_overwrite_replaces_the_products_tilewise_wrote_and_a_killed_runs_leftovers_go(ray_session, tmp_path) -> None:
    src = write_scene(tmp_path / "scene.tif", np.random.default_rng(0).integers(1, 255, (3, 64, 64), dtype=np.uint8))
    out, gpkg = tmp_path / "m.tif", tmp_path / "v.gpkg"
    args = ("infer", src, "--out", out, "--tile", 64, "--vector", gpkg, "--quicklook", "--no-progress")
    assert run(*args, obj={"model": pointwise()}).exit_code == 0
    # what a run killed while writing the polygons leaves: a temporary GeoPackage of a process that is gone
    named = temp_name(gpkg, ".part.gpkg")
    staging.release(named)  # this process does not keep the name: its lock goes
    leftover = named.with_name(named.name.replace(f"-{os.getpid()}-", "-999999-"))
    leftover.write_bytes(b"half a GeoPackage")
    first = {p: digest(p) for p in (gpkg, tmp_path / "m.quicklook.png")}
    assert one_error(run(*args, obj={"model": pointwise()})).endswith("exists; pass --overwrite to replace it")
    result = run(*args, "--overwrite", "--class-colors", "#000000,#ffffff", obj={"model": pointwise()})
    assert result.exit_code == 0, result.output
    assert all(digest(p) != d for p, d in first.items()), "both products replaced"
    assert not leftover.exists(), "the killed run's temporary polygons were removed"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m.json", "m.qml", "m.quicklook.png", "m.tif", "scene.tif", "v.gpkg"
    ]  # fmt: skip
