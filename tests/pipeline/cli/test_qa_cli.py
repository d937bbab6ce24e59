"""Seam QA and test-time augmentation through the CLI: infer --qa --tta flips, tilewise qa, and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from tests.conftest import write_scene
from tests.support.cli import one_error, run
from tiling.core import TileGrid
from tiling.core.qa import coverage
from tiling.core.windows import Window


@pytest.fixture(scope="module")
def qa_run(ray_session, tmp_path_factory):
    """One small run with --qa --tta flips: 100 x 90 px, tiles of 48 px overlapping by half."""
    folder = tmp_path_factory.mktemp("qa")
    src = write_scene(folder / "scene.tif", np.random.default_rng(0).integers(1, 255, (3, 100, 90), dtype=np.uint8))
    out = folder / "m.tif"
    result = run("infer", src, "--out", out, "--tile", 48, "--overlap", 0.5, "--backbone", "mobilenet_v3_large",
                 "--classes", 3, "--qa", "--tta", "flips", "--no-progress")  # fmt: skip
    assert result.exit_code == 0, result.output
    return folder, out, result.output


def test_infer_qa_writes_the_coverage_raster_and_the_disagreement(qa_run) -> None:
    folder, out, output = qa_run
    assert "--tta flips (4 forward passes per tile)" in output  # the cost is shown on the report line
    assert "seam QA: overlap disagreement" in output
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["m.json", "m.qa.json", "m.qa.qml", "m.qa.tif", "m.qml", "m.tif", "scene.tif"]  # no temporary left
    assets = json.loads((folder / "m.json").read_text())["assets"]  # the STAC Item lists the QA files
    assert {k: assets[k]["href"] for k in ("qa", "qa_report", "qa_style")} == {
        "qa": "./m.qa.tif", "qa_report": "./m.qa.json", "qa_style": "./m.qa.qml"
    }  # fmt: skip
    report = json.loads((folder / "m.qa.json").read_text())
    grid = TileGrid((100, 90), 48, 0.5, "shift", (64, 64))
    count, weight = coverage(grid, "gaussian", Window((0, 0), (100, 90)))
    with rasterio.open(folder / "m.qa.tif") as qa, rasterio.open(out) as mask:
        assert (qa.crs, qa.transform, qa.shape) == (mask.crs, mask.transform, mask.shape)  # step 1 here
        np.testing.assert_array_equal(qa.read(1), count)
        np.testing.assert_allclose(qa.read(2), weight, rtol=1e-6)
        assert json.loads(mask.tags()["TILEWISE_PLAN"])["tile"] == 48
    d = report["disagreement"]
    # every pixel is valid, so the pixels the stitcher saw predicted twice are the raster's 2+ pixels
    assert d["overlap_pixels"] == int((count >= 2).sum()) > 0
    assert 0 <= d["pixels"] <= d["overlap_pixels"]
    assert report["plan"] == {"tile": 48, "overlap": 0.5, "edge": "shift", "blend": "gaussian", "block": [64, 64]}


def test_qa_on_a_finished_mask_recomputes_the_raster_and_reads_the_stored_disagreement(qa_run) -> None:
    folder, out, _ = qa_run
    before = json.loads((folder / "m.qa.json").read_text())
    with rasterio.open(folder / "m.qa.tif") as ds:
        raster = ds.read()
    line = one_error(run("qa", out))
    assert "m.qa.tif: exists; pass --overwrite" in line
    result = run("qa", folder, "--overwrite")  # a run folder: its masks, not the .qa.tif beside them
    assert result.exit_code == 0, result.output
    assert f"{out}: overlap disagreement" in result.output and result.output.count("wrote") == 1
    after = json.loads((folder / "m.qa.json").read_text())
    assert after["disagreement"] == before["disagreement"] and after["coverage"] == before["coverage"]
    assert {"qa", "qa_report", "qa_style"} <= set(json.loads((folder / "m.json").read_text())["assets"])
    with rasterio.open(folder / "m.qa.tif") as ds:
        np.testing.assert_array_equal(ds.read(), raster)


def test_qa_refuses_what_it_cannot_use_or_must_not_replace(tmp_path) -> None:
    plain = write_scene(tmp_path / "plain.tif", np.ones((1, 16, 16), np.uint8))
    assert "records no tile plan" in one_error(run("qa", plain))
    assert "no such mask or run folder" in one_error(run("qa", tmp_path / "none.tif"))
    assert "holds no COG mask" in one_error(run("qa", tmp_path))
    src = write_scene(tmp_path / "scene.tif", np.ones((3, 32, 32), np.uint8))
    line = one_error(run("infer", src, "--out", tmp_path / "m.zarr", "--qa"))
    assert "--qa writes its coverage raster beside a COG mask" in line
    (tmp_path / "m.qa.json").write_text("{}")  # the user's file, where the QA report would go
    line = one_error(run("infer", src, "--out", tmp_path / "m.tif", "--qa", "--overwrite"))
    assert "m.qa.json: exists and was not written by tilewise" in line
    assert (tmp_path / "m.qa.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.qa.json", "plain.tif", "scene.tif"]
