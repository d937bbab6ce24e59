"""``tilewise batch`` through the CLI: a mixed archive written once, skipped, redone where it changed, bad scenes alone.

A 1x1 convolution stands in for DeepLabV3 (handed in through click's
``obj``, as a program embedding tilewise would), so the runs are quick and
the masks deterministic.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from models import Normalization
from pipeline.batch import EXIT_OK, EXIT_PARTIAL, EXIT_RUN_FAILED, discover
from pipeline.cli import cli
from tests.conftest import SHARED, write_scene
from tests.support.models import pointwise

NORM = Normalization((128.0,) * 3, (64.0,) * 3)
LANDSAT = SHARED / "zarr" / "rgb_byte_landsat.ome.zarr"
SLIDE = SHARED / "dicom" / "highdicom" / "sm_image.dcm"
FAST = ("--tile", "128", "--overlap", "0.25", "--batch", "8", "--precision", "fp32", "--classes", "2")


def batch(*args: object, model=None):
    obj = {"model": model if model is not None else pointwise(), "normalization": NORM}
    return CliRunner().invoke(cli, ["batch", *map(str, args), *FAST, "--no-progress"], obj=obj, catch_exceptions=False)


def report(out: Path) -> dict:
    return json.loads((out / ".tilewise" / "runs" / "latest.json").read_text())


def statuses(out: Path) -> dict[str, str]:
    return {Path(s["src"]).name: s["status"] for s in report(out)["scenes"]}


def geotiffs(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    return [
        write_scene(folder / f"g{i:02d}.tif", rng.integers(1, 255, (3, 64 + 16 * (i % 3), 96), np.uint8))
        for i in range(n)
    ]


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, Path]:
    """12 scenes: 8 GeoTIFFs and an OME-Zarr store in a folder; 2 DICOM slides and another OME-Zarr store
    (its level 1, a per-scene option) listed in a JSON-lines manifest."""
    folder = tmp_path / "archive"
    geotiffs(folder, 8)
    shutil.copytree(LANDSAT, folder / "z0.ome.zarr")
    more = tmp_path / "more"
    more.mkdir()
    shutil.copytree(LANDSAT, more / "z1.ome.zarr")
    for name in ("s0.dcm", "s1.dcm"):
        shutil.copyfile(SLIDE, more / name)
    manifest = tmp_path / "more.jsonl"
    manifest.write_text('{"path": "more/s0.dcm"}\n"more/s1.dcm"\n{"path": "more/z1.ome.zarr", "level": 1}\n')
    return folder, manifest


def test_a_mixed_archive_is_written_then_skipped_then_only_the_touched_scene_redone(
    ray_session, tmp_path, archive
) -> None:
    folder, manifest = archive
    out = tmp_path / "masks"
    first = batch(folder, manifest, "--out", out)
    assert first.exit_code == EXIT_OK, first.output
    assert set(statuses(out).values()) == {"done"} and len(statuses(out)) == 12
    masks = sorted(p.name for p in out.iterdir() if "_mask" in p.name and p.suffix in (".tif", ".zarr", ".dcm"))
    assert len(masks) == 12 and {Path(m).suffix for m in masks} == {".tif", ".zarr", ".dcm"}
    assert "12 segmented, 0 skipped" in first.output

    second = batch(folder, manifest, "--out", out)
    assert second.exit_code == EXIT_OK, second.output
    assert set(statuses(out).values()) == {"skipped"}
    assert report(out)["seconds"] < 10, "a run with nothing to do only reads the records"

    # one scene touched, one corrupt scene added: exactly the touched one is redone, the corrupt one fails alone
    touched = folder / "g03.tif"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    (folder / "broken.tif").write_bytes(b"II*\x00" + b"\x17" * 500)  # a TIFF signature, then garbage
    third = batch(folder, manifest, "--out", out, "--retries", "1")
    assert third.exit_code == EXIT_PARTIAL, third.output
    assert [n for n, s in statuses(out).items() if s == "done"] == ["g03.tif"]
    assert [n for n, s in statuses(out).items() if s == "failed"] == ["broken.tif"]
    failed = next(s for s in report(out)["scenes"] if s["status"] == "failed")
    assert "broken.tif" in failed["error"] and "not a readable raster" in failed["error"]
    assert failed["attempts"] == 2, failed
    assert "FAILED" in third.output and "broken.tif" in third.output and not (out / "broken_mask.tif").exists()
    text = (out / ".tilewise" / "runs" / "latest.txt").read_text()
    assert "1 segmented, 11 skipped (already done), 1 failed" in text
    record = json.loads((out / ".tilewise" / "state" / "g03_mask.tif.json").read_text())
    assert record["status"] == "done" and record["input"]["mtime_ns"] == touched.stat().st_mtime_ns
    assert record["model"].startswith("module:Conv2d:sha256:") and record["params"]["tiling"]["tile"] == 128
    z1 = json.loads((out / ".tilewise" / "state" / "z1_mask.zarr.json").read_text())
    assert z1["params"]["input"]["level"] == 1


def test_a_csv_manifest_sets_bands_per_scene_and_a_bad_one_is_refused(tmp_path) -> None:
    four = write_scene(tmp_path / "four.tif", np.ones((4, 32, 32), np.uint8))
    manifest = tmp_path / "scenes.csv"
    manifest.write_text("path,bands\nfour.tif,3;2;1\n")
    (entry,) = discover([manifest], tmp_path / "out")
    assert entry.src == str(four) and entry.options == {"bands": (3, 2, 1)}
    manifest.write_text("path,colour\nfour.tif,red\n")
    out = tmp_path / "out"
    result = batch(manifest, "--out", out)
    assert result.exit_code == EXIT_RUN_FAILED
    assert "unknown per-scene option colour" in result.output and "Traceback" not in result.output
