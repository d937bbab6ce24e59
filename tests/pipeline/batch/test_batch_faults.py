"""A batch driver killed with SIGKILL mid-run, in the middle of a scene: the next run skips the scenes
that were done, resumes the interrupted one from its journal (only the tiles of missing blocks run),
leaves no temporary file, and every mask is byte-identical to one from a run that was never killed."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from models import Normalization
from pipeline.batch import EXIT_OK
from pipeline.cli import cli
from pipeline.infer.journal import count_records
from tests.conftest import write_scene
from tests.support.models import Gate

ROOT = Path(__file__).resolve().parents[3]
NORM = Normalization((128.0,) * 3, (64.0,) * 3)
#: what temp_name makes: .<name>.<host>-<pid>-<8 hex><suffix>
TEMP = re.compile(r"^\..+\.[A-Za-z0-9]+-\d+-[0-9a-f]{8}\.")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if TEMP.match(p.name)]


def done(out: Path) -> list[str]:
    state = out / ".tilewise" / "state"
    records = [json.loads(p.read_text()) for p in state.glob("*.json")] if state.is_dir() else []
    return [r["src"] for r in records if r["status"] == "done"]


def journaled(out: Path) -> int:
    """Blocks in the journals under ``out``."""
    return sum(count_records(p) for p in out.glob(".*.journal"))


def test_a_killed_batch_is_finished_by_the_next_run_with_identical_masks(ray_session, tmp_path) -> None:
    archive, out = tmp_path / "archive", tmp_path / "masks"
    archive.mkdir()
    out.mkdir()
    rng = np.random.default_rng(7)
    sides = (96, 768, 96)  # the middle one: 256 tiles of 64 px, 9 output blocks of 256 px
    scenes = [
        write_scene(archive / f"s{i}.tif", rng.integers(1, 255, (3, n, n), np.uint8)) for i, n in enumerate(sides)
    ]
    gate = Gate(tmp_path)
    script = textwrap.dedent(f"""
        from pathlib import Path
        from models import Normalization
        from pipeline.batch import run_batch
        from pipeline.config import InferenceConfig, ModelConfig, PipelineConfig, RayConfig, TilingConfig
        from tests.support.models import Gate
        cfg = PipelineConfig(TilingConfig(tile=64), ModelConfig(classes=2, precision="fp32"),
                             InferenceConfig(batch=4), RayConfig(num_cpus=2))
        run_batch([{str(archive)!r}], {str(out)!r}, cfg, model=Gate(Path({str(tmp_path)!r})).model(),
                  normalization=Normalization((128.0,) * 3, (64.0,) * 3), progress=False)
    """)
    run = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    # one forward pass at a time until three blocks of s1 are journaled: the run is held there, however fast
    allowed = 0
    while journaled(out) < 3:
        assert run.poll() is None and allowed < 100, run.communicate()[0][-3000:]
        allowed += 1
        gate.allow(allowed)
        gate.wait_until_held(allowed + 1)
        time.sleep(0.3)  # the last pass's tiles reach the stitcher and its journal
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=60)
    finished = done(out)
    assert [Path(f).name for f in finished] == ["s0.tif"], "killed in the middle of s1"
    blocks = journaled(out)
    assert 3 <= blocks < 9 and temporaries(out), "the killed run left its journal and temporary files"

    gate.open()  # the same model, no longer held
    # the re-run also segments untouched copies of every scene: the masks of a run never killed
    clean = tmp_path / "clean"
    clean.mkdir()
    for s in scenes:
        shutil.copyfile(s, clean / f"c{s.name}")
    result = CliRunner().invoke(
        cli,
        ["batch", str(archive), str(clean), "--out", str(out), "--tile", "64", "--batch", "4", "--classes", "2",
         "--precision", "fp32", "--no-progress"],
        obj={"model": gate.model(), "normalization": NORM}, catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == EXIT_OK, result.output
    report = json.loads((out / ".tilewise" / "runs" / "latest.json").read_text())
    status = {Path(s["src"]).name: s["status"] for s in report["scenes"]}
    assert [n for n, s in status.items() if s == "skipped"] == ["s0.tif"]
    resumed = {Path(s["src"]).name: s["resumed_tiles"] for s in report["scenes"]}
    assert resumed["cs1.tif"] == 0 and 0 < resumed["s1.tif"] < 256, resumed
    assert f"{resumed['s1.tif']} tiles resumed from a killed run" in result.output
    assert temporaries(out) == [], "no temporary file is left anywhere under --out"
    for s in scenes:
        mask = out / f"{s.stem}_mask.tif"
        assert sha256(mask) == sha256(out / f"c{s.stem}_mask.tif"), f"{mask.name} differs from a clean run's"
