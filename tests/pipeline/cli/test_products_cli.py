"""The analyst outputs through the CLI: sidecars, --vector, --quicklook, and flags refused where they do not apply."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest

from tests.conftest import SHARED, write_scene
from tests.support.cli import one_error, run

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
    info = pyogrio.read_info(gpkg)
    assert info["crs"] == "EPSG:32633" and info["features"] > 0
    meta, _, _, fields = pyogrio.raw.read(gpkg, read_geometry=False)
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
