"""``tilewise batch`` on every machine and every real folder (issue 19): a bug in one scene fails that scene
alone, tilewise's own outputs are never scenes, records and journals are untrusted input, and SOURCES
naming no scene say so.

A 1x1 convolution stands in for DeepLabV3, handed in through click's ``obj``.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from models import Normalization
from pipeline.batch import EXIT_NO_SCENES, EXIT_OK, EXIT_PARTIAL
from pipeline.cli import cli
from tests.conftest import write_scene
from tests.support import faulty_format
from tests.support.models import pointwise
from tiling import formats
from tiling.core import staging

NORM = Normalization((128.0,) * 3, (64.0,) * 3)
FAST = ("--tile", "32", "--overlap", "0.25", "--batch", "8", "--precision", "fp32", "--classes", "2")
#: tilewise's temporary names (and their lock files)
TEMP = re.compile(r"^\..+\.[A-Za-z0-9]+-\d+-[0-9a-f]{8}\.")


def batch(*args: object, model=None):
    obj = {"model": model if model is not None else pointwise(), "normalization": NORM}
    return CliRunner().invoke(cli, ["batch", *map(str, args), *FAST, "--no-progress"], obj=obj, catch_exceptions=False)


def report(out: Path) -> dict:
    return json.loads((out / ".tilewise" / "runs" / "latest.json").read_text())


def scenes(out: Path) -> dict[str, dict]:
    return {Path(s["src"]).name: s for s in report(out)["scenes"]}


def geotiffs(folder: Path, n: int, seed: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    return [write_scene(folder / f"g{i}.tif", rng.integers(1, 255, (3, 48, 64), np.uint8)) for i in range(n)]


@pytest.fixture
def faulty():
    fmt = formats.register(faulty_format.LOCATOR)
    yield fmt
    formats.unregister(fmt.name)


def test_an_unexpected_error_in_one_scene_fails_that_scene_alone(ray_session, tmp_path, faulty) -> None:
    """A plugin's bug while a scene is looked at, planned, stitched, published or given a sidecar: that
    scene fails (marked internal, its one-line reason in the report and its record), the others finish."""
    archive, out = tmp_path / "archive", tmp_path / "masks"
    archive.mkdir()
    rng = np.random.default_rng(5)
    stages = ("good", "sniff", "plan", "write", "finalize", "sidecar", "good2")
    for stage in stages:
        faulty_format.write_fty(archive / f"{stage}.fty", rng.integers(1, 255, (3, 40, 56), np.uint8))
    result = batch(archive, "--out", out, "--retries", "0")
    assert result.exit_code == EXIT_PARTIAL, result.output
    assert "Traceback" not in result.output
    lines = scenes(out)
    assert {n: s["status"] for n, s in lines.items()} == {
        f"{s}.fty": "done" if s.startswith("good") else "failed" for s in stages
    }
    reasons = {
        "sniff": "RuntimeError: the plugin cannot tell what sniff.fty is",
        "plan": "AttributeError: 'NoneType' object has no attribute 'crs'",
        "write": "ValueError: cannot broadcast a block of shape",
        "finalize": "LookupError: no such band: 0",
        "sidecar": "RuntimeError: CPLE_AppDefinedError",
    }
    for stage, reason in reasons.items():
        line = lines[f"{stage}.fty"]
        assert line["internal"] is True and "internal error" in line["error"] and reason in line["error"], line
        assert "\n" not in line["error"] and f"FAILED {archive / stage}.fty: " in result.output
        assert not (out / f"{stage}_mask.fty").exists()
        if stage != "sniff":  # looked at before it had a mask name, so it has no record
            record = json.loads((out / ".tilewise" / "state" / f"{stage}_mask.fty.json").read_text())
            assert record["status"] == "failed" and reason in record["error"]
    for good in ("good", "good2"):
        assert np.load(out / f"{good}_mask.fty").shape == (40, 56)
    assert [p.name for p in out.iterdir() if TEMP.match(p.name)] == [], "no temporary file or lock is left"


def test_a_hand_edited_state_record_is_unreadable_and_the_scene_is_redone(ray_session, tmp_path, caplog) -> None:
    archive, out = tmp_path / "archive", tmp_path / "masks"
    geotiffs(archive, 2)
    assert batch(archive, "--out", out).exit_code == EXIT_OK
    record = out / ".tilewise" / "state" / "g0_mask.tif.json"
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "attempts": "2"}))  # a person's edit
    (out / "g0_mask.tif").unlink()  # and the mask is gone: the scene is to be redone
    with caplog.at_level("WARNING", logger="pipeline.batch.state"):
        again = batch(archive, "--out", out)
    assert again.exit_code == EXIT_OK, again.output
    assert {n: s["status"] for n, s in scenes(out).items()} == {"g0.tif": "done", "g1.tif": "skipped"}
    assert json.loads(record.read_text())["attempts"] == 1
    assert any("unreadable state record" in r.message and "'attempts'" in r.message for r in caplog.records)


@pytest.mark.parametrize("kind", ["folder", "glob", "csv"])
def test_sources_naming_no_scene_say_so_and_exit_non_zero(tmp_path, kind) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a scene")
    source = {
        "folder": empty,
        "glob": tmp_path / "archive" / "**" / "*.tif",
        "csv": tmp_path / "scenes.csv",
    }[kind]
    (tmp_path / "scenes.csv").write_text("path,bands\n")
    result = batch(source, "--out", tmp_path / "masks")
    assert result.exit_code == EXIT_NO_SCENES, result.output
    assert "Traceback" not in result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert "SOURCES named no scene" in line and str(source) in line, line
    assert {"folder": "image files ending in", "glob": "a glob", "csv": "a manifest with no rows"}[kind] in line
    assert not (tmp_path / "masks" / ".tilewise" / "runs").exists()


def test_a_batch_into_its_own_archive_never_segments_its_masks(ray_session, tmp_path) -> None:
    """--out inside the archive, or the archive itself: the next run finds the same scenes, not its masks."""
    archive, flat = tmp_path / "archive", tmp_path / "flat"
    geotiffs(archive, 2)
    (archive / "sub").mkdir()
    write_scene(archive / "sub" / "h.tif", np.full((3, 40, 40), 9, np.uint8))
    geotiffs(flat, 2)
    pattern = str(archive / "**" / "*.tif")
    assert batch(flat, "--out", flat / "masks").exit_code == EXIT_OK  # an earlier run's folder inside the archive
    for sources, out, expected in (
        ((pattern,), archive / "masks", ["g0.tif", "g1.tif", "h.tif"]),
        ((flat,), flat, ["g0.tif", "g1.tif"]),
    ):
        for run in range(2):
            result = batch(*sources, "--out", out, "--save-probs")
            assert result.exit_code == EXIT_OK, result.output
            assert sorted(scenes(out)) == expected, f"run {run} into {out.name}: {sorted(scenes(out))}"
            assert ("0 segmented" in result.output) == (run == 1), result.output
    # a mask carrying tilewise's mark, copied into the archive without its record, is no scene either
    (flat / "copied.tif").write_bytes((archive / "masks" / "g1_mask.tif").read_bytes())
    assert batch(flat, "--out", flat).exit_code == EXIT_OK
    assert "copied.tif" not in scenes(flat)


def _forged_journal(path: Path, shape: tuple[int, int], block: int, label: int) -> None:
    """A journal without the record naming its plan (as tilewise wrote them before), every block present."""
    with open(path, "wb") as f:
        for r in range(0, shape[0], block):
            for c in range(0, shape[1], block):
                size = (min(block, shape[0] - r), min(block, shape[1] - c))
                head = json.dumps({"start": [r, c], "shape": list(size), "classes": 0}).encode()
                payload = zlib.compress(np.full(size, label, np.uint8).tobytes())
                f.write(struct.pack("<III", len(head), len(payload), zlib.crc32(head + payload)) + head + payload)


def test_a_forged_journal_is_discarded_and_the_scene_segmented(ray_session, tmp_path, caplog) -> None:
    """A journal of another plan (or none) never publishes a mask: it is discarded with a log line."""
    archive, out = tmp_path / "archive", tmp_path / "masks"
    geotiffs(archive, 1)
    assert batch(archive, "--out", out).exit_code == EXIT_OK
    mask = out / "g0_mask.tif"
    with rasterio.open(mask) as ds:
        clean, block = ds.read(1), ds.block_shapes[0][0]
    record = out / ".tilewise" / "state" / "g0_mask.tif.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "status": "failed"}))  # a run that was killed
    journal = out / f".g0_mask.tif.{staging.host()}-999999-0badc0de.journal"  # its process is gone
    _forged_journal(journal, clean.shape, block, label=7)
    with caplog.at_level("WARNING", logger="pipeline.infer.journal"):
        again = batch(archive, "--out", out)
    assert again.exit_code == EXIT_OK, again.output
    assert scenes(out)["g0.tif"]["resumed_tiles"] == 0
    with rasterio.open(mask) as ds:
        np.testing.assert_array_equal(ds.read(1), clean)
    assert any("discarded the journal" in r.message and "another plan" in r.message for r in caplog.records)
    assert not journal.exists()
