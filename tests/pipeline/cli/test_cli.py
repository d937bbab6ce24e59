"""The tilewise command line: help, the issue's example run, and every bad input.

Each bad input must give one ``Error:`` line naming the file and the problem,
a non-zero exit, no traceback, and nothing at the output path.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch

from models import build_model, cpu_has_native_bf16
from tests.conftest import write_scene
from tests.support.cli import run as support_run


def run(*args: str):
    return support_run(*args)


def assert_clean_failure(result, out, *needles: str) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert not out.exists()
    assert not [p for p in out.parent.glob(f".{out.name}*")] if out.parent.exists() else True


@pytest.mark.parametrize("command", [[], ["infer"], ["demo"]])
def test_help(command) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output
    if command == ["infer"]:
        for flag in (
            "--tile",
            "--overlap",
            "--blend",
            "--batch",
            "--classes",
            "--backbone",
            "--weights",
            "--precision",
            "--bands",
            "--save-probs",
            "--address",
        ):
            assert flag in result.output


def test_issue_example_on_a_real_geotiff(ray_session, tmp_path, rgb_byte) -> None:
    """tilewise infer RGB.byte.tif --out m.tif --tile 128 --classes 3 (DeepLabV3-ResNet101)."""
    out = tmp_path / "m.tif"
    result = run("infer", rgb_byte, "--out", out, "--tile", 128, "--classes", 3, "--no-progress")
    assert result.exit_code == 0, result.output
    assert f"mask: {out}" in result.output
    # --precision auto: bf16 only where this CPU computes it natively, and the run says which
    expected = "bf16" if cpu_has_native_bf16() else "fp32"
    assert f"precision {expected} (chosen by --precision auto for this hardware)" in result.output
    with rasterio.open(rgb_byte) as src, rasterio.open(out) as m:
        assert m.crs == src.crs and m.transform == src.transform
        assert (m.width, m.height) == (src.width, src.height)
        assert ((m.read(1) == m.nodata) == (src.dataset_mask() == 0)).all()
        assert m.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"


def test_missing_file(tmp_path) -> None:
    out = tmp_path / "m.tif"
    assert_clean_failure(run("infer", tmp_path / "nope.tif", "--out", out), out, "nope.tif", "no such file")


def test_not_a_raster(tmp_path) -> None:
    src = tmp_path / "notes.tif"
    src.write_text("hello\n")
    out = tmp_path / "m.tif"
    assert_clean_failure(run("infer", src, "--out", out), out, "notes.tif", "not a readable raster")


def test_truncated_geotiff(tmp_path, scene_factory) -> None:
    good = scene_factory(256, 256)
    src = tmp_path / "cut.tif"
    src.write_bytes(good.read_bytes()[:40_000])
    out = tmp_path / "m.tif"
    assert_clean_failure(run("infer", src, "--out", out), out, "cut.tif", "truncated")


def test_band_that_does_not_exist(tmp_path, scene_factory) -> None:
    out = tmp_path / "m.tif"
    result = run("infer", scene_factory(64, 64), "--out", out, "--bands", "1,2,4")
    assert_clean_failure(result, out, "band 4 does not exist")


def test_band_count_the_weights_cannot_take(tmp_path, scene_factory) -> None:
    weights = tmp_path / "four_band.pth"
    torch.save(build_model("resnet50", classes=2, in_channels=4).state_dict(), weights)
    out = tmp_path / "m.tif"
    result = run("infer", scene_factory(64, 64), "--out", out, "--backbone", "resnet50", "--weights", weights)
    assert_clean_failure(result, out, "trained on 4 input bands", "has 3")


@pytest.mark.parametrize("overlap", ["1.0", "-0.1", "1.5"])
def test_overlap_outside_unit_interval(tmp_path, scene_factory, overlap) -> None:
    src, out = scene_factory(64, 64), tmp_path / "m.tif"
    assert_clean_failure(run("infer", src, "--out", out, "--overlap", overlap), out, src.name, "overlap")


@pytest.mark.parametrize("tile", ["0", "-64"])
def test_tile_not_positive(tmp_path, scene_factory, tile) -> None:
    src, out = scene_factory(64, 64), tmp_path / "m.tif"
    assert_clean_failure(run("infer", src, "--out", out, "--tile", tile), out, src.name, "tile")


def test_output_folder_cannot_be_written(tmp_path, scene_factory) -> None:
    src = scene_factory(64, 64)
    (tmp_path / "plain_file").write_text("x")
    out = tmp_path / "plain_file" / "m.tif"
    assert_clean_failure(run("infer", src, "--out", out), out, "m.tif", "cannot write output")
    out = tmp_path / "missing_dir" / "m.tif"
    assert_clean_failure(run("infer", src, "--out", out), out, "m.tif", "does not exist")


def test_missing_crs_is_refused_unless_allowed(ray_session, tmp_path) -> None:
    src = write_scene(tmp_path / "nocrs.tif", np.ones((3, 64, 64), np.uint8), crs=None)
    out = tmp_path / "m.tif"
    assert_clean_failure(run("infer", src, "--out", out), out, "nocrs.tif", "has no CRS", "--allow-no-crs")
    ok = run("infer", src, "--out", out, "--allow-no-crs", "--tile", 64, "--backbone", "resnet50", "--no-progress")
    assert ok.exit_code == 0 and out.exists()


def test_nan_pixels_become_nodata(ray_session, tmp_path) -> None:
    data = np.random.default_rng(0).random((3, 80, 90)).astype(np.float32)
    data[:, 10:20, 30:50] = np.nan
    src = write_scene(tmp_path / "nan.tif", data, block=None)
    out = tmp_path / "m.tif"
    result = run("infer", src, "--out", out, "--tile", 64, "--backbone", "resnet50", "--no-progress")
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as m:
        labels = m.read(1)
    assert (labels[10:20, 30:50] == 255).all() and (labels != 255).sum() == 80 * 90 - 200


def test_batch_keeps_going_past_a_bad_scene(ray_session, tmp_path, scene_factory) -> None:
    good1, good2 = scene_factory(64, 64, seed=1), scene_factory(70, 60, seed=2)
    bad = tmp_path / "bad.tif"
    bad.write_text("not a raster")
    out_dir = tmp_path / "masks"
    out_dir.mkdir()
    result = run("infer", good1, bad, good2, "--out", out_dir, "--tile", 64, "--backbone", "resnet50", "--no-progress")
    assert result.exit_code == 1
    assert "bad.tif: not a readable raster" in result.output
    assert "2 of 3 scenes written; 1 failed" in result.output
    # each COG mask comes with its QGIS style and STAC Item
    written = [f"{g.stem}_mask{ext}" for g in (good1, good2) for ext in (".tif", ".qml", ".json")]
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(written)


def test_demo_trains_scores_and_writes_a_georeferenced_mask(ray_session, tmp_path) -> None:
    # one epoch on 2 DDP workers: the whole mission, not its accuracy (README has the real run)
    work = tmp_path / "demo"
    result = run("demo", "--workdir", work, "--size", 384, "--epochs", 1, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "validation mIoU: " in result.output and "trained 1 epochs on 2 DDP workers" in result.output
    # the precision --precision auto chose, for training and inference alike
    expected = "bf16" if cpu_has_native_bf16() else "fp32"
    assert f"precision: training {expected}, inference {expected} (chosen by --precision auto" in result.output
    assert f"mask: {work / 'mask.tif'}" in result.output and f"quicklook: {work / 'quicklook.png'}" in result.output
    with rasterio.open(work / "scene.tif") as s, rasterio.open(work / "mask.tif") as m:
        assert (m.crs, m.transform, m.shape) == (s.crs, s.transform, s.shape)
        assert ((m.read(1) == 255) == (s.dataset_mask() == 0)).all()
        assert json.loads(m.tags()["CLASS_NAMES"]) == ["water", "fields", "forest", "roads"]
    assert (work / "quicklook.png").stat().st_size > 10_000


def test_corrupt_block_fails_inside_ray_and_leaves_nothing(ray_session, tmp_path) -> None:
    data = np.random.default_rng(0).integers(1, 255, (3, 2048, 2048), dtype=np.uint8)
    src = write_scene(tmp_path / "corrupt.tif", data, block=64, compress="deflate")
    # rows 384-447 lie outside the windows the driver samples for band statistics,
    # so only a Ray read task meets the damaged block
    with rasterio.open(src) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_6_6", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_6_6", "TIFF", bidx=1))
    raw = bytearray(src.read_bytes())
    raw[offset : offset + size] = b"\xff" * size
    src.write_bytes(bytes(raw))
    out = tmp_path / "m.tif"
    result = run("infer", src, "--out", out, "--tile", 256, "--backbone", "resnet50", "--no-progress")
    assert_clean_failure(result, out, "corrupt.tif", "cannot read")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.tif"]
