"""Nothing hangs, nothing crashes, nothing is left behind: killed actors, stuck models, one CPU, signals, full disks.

Runs that need their own Ray (one CPU, a stuck model that must be killed
with its Ray, signals) run as subprocesses; the rest use the session's Ray.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from models import Normalization
from pipeline.config import InferenceConfig, ModelConfig, PipelineConfig, TilingConfig
from pipeline.infer import infer_scene
from pipeline.infer.engine import WorkerDiedError
from tests.conftest import write_scene
from tests.support.models import Gate, KillsItsProcess, marker_path, pointwise
from tiling.errors import SinkError

ROOT = Path(__file__).resolve().parents[3]
NORM = Normalization((128.0,) * 3, (64.0,) * 3)


def cfg(**inference) -> PipelineConfig:
    return PipelineConfig(
        TilingConfig(tile=32, overlap=0.25, blend="gaussian"),
        ModelConfig(classes=2, precision="fp32", channels_last=False),
        InferenceConfig(batch=2, **inference),
    )


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def wait_until_stitching(run: subprocess.Popen, folder: Path, gate: Gate) -> None:
    """Let the gated model run one forward pass at a time until the sink's temporary files are there.

    Ray Data hands results on in blocks of several batches, so the first stitched
    tiles come some passes after the first. Planning opens and aborts a sink at
    once, so files that are still there while the run is held are the running
    sink's. The run never gets further than the passes allowed, however fast the machine.
    """
    allowed = 1
    while True:
        gate.wait_until_held(allowed + 1)
        if hidden(folder):
            time.sleep(0.5)  # the batch that was let through may still be on its way to the stitcher
            if hidden(folder):
                return
        if run.poll() is not None or allowed > 200:
            raise AssertionError(f"the run never started stitching: {run.communicate(timeout=30)[0]}")
        allowed += 1
        gate.allow(allowed)


def test_an_actor_killed_once_is_restarted_and_the_mask_is_unchanged(ray_session, tmp_path, scene_factory) -> None:
    src = scene_factory(96, 96)
    clean, restarted = tmp_path / "clean.tif", tmp_path / "restarted.tif"
    infer_scene(src, clean, cfg(), model=pointwise(), normalization=NORM, progress=False)
    model = KillsItsProcess(pointwise(), marker=marker_path(tmp_path), nth=3)
    infer_scene(src, restarted, cfg(max_restarts=2), model=model, normalization=NORM, progress=False)
    assert Path(marker_path(tmp_path)).exists(), "the actor really died once"
    with rasterio.open(clean) as a, rasterio.open(restarted) as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))


def test_an_actor_that_always_dies_ends_the_run_with_one_line(ray_session, tmp_path, scene_factory) -> None:
    src, out = scene_factory(96, 96), tmp_path / "m.tif"
    t0 = time.monotonic()
    with pytest.raises(WorkerDiedError, match=r"died 2 times.*not processed: .*tiles 0-") as e:
        infer_scene(
            src, out, cfg(max_restarts=1), model=KillsItsProcess(pointwise()), normalization=NORM, progress=False
        )
    assert time.monotonic() - t0 < 180
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name], "no mask, no temporary files"


def test_a_stuck_model_ends_the_run_after_the_stall_timeout(tmp_path, scene_factory) -> None:
    src, out = scene_factory(64, 64), tmp_path / "m.tif"
    script = textwrap.dedent(f"""
        from pipeline.config import InferenceConfig, ModelConfig, PipelineConfig, RayConfig, TilingConfig
        from pipeline.infer import infer_scene
        from tests.support.models import Hangs
        cfg = PipelineConfig(TilingConfig(tile=32), ModelConfig(classes=2, precision="fp32", channels_last=False),
                             InferenceConfig(batch=2, stall_timeout=4), RayConfig(num_cpus=2))
        try:
            infer_scene({str(src)!r}, {str(out)!r}, cfg, model=Hangs(), progress=False)
        except Exception as e:
            print("RAISED", type(e).__name__, e)
    """)
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert "RAISED PipelineStalledError no tile finished in 4 s" in done.stdout, done.stdout + done.stderr[-2000:]
    assert "0 of 9 tiles done" in done.stdout
    assert time.monotonic() - t0 < 200
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]


def test_actors_that_would_hold_every_cpu_leave_room_for_the_readers(ray_session, tmp_path, scene_factory) -> None:
    """The one-CPU hang, on the session's 2 CPUs: two model actors used to reserve both CPUs and
    the read tasks never ran. Now actors and readers share them and the run finishes."""
    src = scene_factory(96, 96)
    clean, crowded = tmp_path / "clean.tif", tmp_path / "crowded.tif"
    infer_scene(src, clean, cfg(), model=pointwise(), normalization=NORM, progress=False)
    infer_scene(src, crowded, cfg(actors=2, stall_timeout=120), model=pointwise(), normalization=NORM, progress=False)
    with rasterio.open(clean) as a, rasterio.open(crowded) as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))


def held_run(tmp_path: Path, script: str) -> tuple[subprocess.Popen, Gate]:
    """Start ``script`` in a fresh process whose model (``gate.model()``) is held after its first forward pass."""
    gate = Gate(tmp_path / "gate")
    gate.path.parent.mkdir()
    gate.allow(1)
    header = textwrap.dedent(f"""
        from pathlib import Path
        from models import Normalization
        from tests.support.models import Gate
        gate = Gate(Path({str(gate.path.parent)!r}))
        NORM = Normalization((128.0,) * 3, (64.0,) * 3)
    """)
    run = subprocess.Popen(
        [sys.executable, "-c", header + textwrap.dedent(script)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    return run, gate


def test_a_killed_runs_leftovers_are_removed_by_the_next_run(ray_session, tmp_path) -> None:
    src = write_scene(tmp_path / "scene.tif", np.random.default_rng(0).integers(1, 255, (3, 256, 256), np.uint8))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "m.tif"
    run, gate = held_run(
        tmp_path,
        f"""
        from pipeline.config import InferenceConfig, ModelConfig, PipelineConfig, RayConfig, TilingConfig
        from pipeline.infer import infer_scene
        cfg = PipelineConfig(TilingConfig(tile=32), ModelConfig(classes=2, precision="fp32", channels_last=False),
                             InferenceConfig(batch=2), RayConfig(num_cpus=2))
        infer_scene({str(src)!r}, {str(out)!r}, cfg, model=gate.model(), normalization=NORM, progress=False)
    """,
    )
    wait_until_stitching(run, out_dir, gate)  # the run cannot finish while the gate holds
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=60)
    assert hidden(out_dir) and not out.exists(), "the killed run left temporary files and no mask"
    infer_scene(src, out, cfg(), model=pointwise(), normalization=NORM, progress=False)
    assert hidden(out_dir) == [], "the next run removed the leftovers"
    assert out.exists()


def test_sigterm_aborts_cleanly_with_status_143(tmp_path) -> None:
    """The CLI (its own Ray), held by a gated model after its first batch: SIGTERM ends it with 143 and nothing left."""
    folder = tmp_path / "data"
    folder.mkdir()
    src = write_scene(folder / "scene.tif", np.random.default_rng(1).integers(1, 255, (3, 256, 256), np.uint8))
    out = folder / "m.tif"
    run, gate = held_run(
        tmp_path,
        f"""
        from pipeline.cli import cli
        args = ["infer", {str(src)!r}, "--out", {str(out)!r}, "--tile", "32", "--batch", "2", "--precision", "fp32",
                "--num-cpus", "2", "--no-progress"]
        cli.main(args=args, obj={{"model": gate.model(), "normalization": NORM}}, prog_name="tilewise")
    """,
    )
    wait_until_stitching(run, folder, gate)
    run.send_signal(signal.SIGTERM)
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 143, output
    assert "terminated; nothing written at" in output and "Traceback" not in output
    assert "SIGTERM handler is not set" not in output, "Ray's notice is noise: the CLI handles SIGTERM itself"
    assert sorted(p.name for p in folder.iterdir()) == ["scene.tif"], "no mask, no temporary files"


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (skipped where this process may not mount one)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_one_line_and_leaves_nothing(ray_session, tmp_path, small_disk) -> None:
    """Random labels (a 1x1 conv on noise) of 512x512 do not fit in 64 KiB, whatever the compression."""
    src = write_scene(tmp_path / "noise.tif", np.random.default_rng(2).integers(1, 255, (3, 512, 512), np.uint8))
    with pytest.raises(SinkError, match=r"m\.tif: no space left on the device while (writing|finishing) it") as e:
        infer_scene(src, small_disk / "m.tif", cfg(), model=pointwise(), normalization=NORM, progress=False)
    assert "\n" not in str(e.value)
    assert list(small_disk.iterdir()) == []


def test_a_disk_too_full_to_start_is_one_line_through_the_cli(tmp_path, small_disk, scene_factory) -> None:
    filler = small_disk / "filler.bin"
    filler.write_bytes(b"x" * (60 * 1024))  # the user's own file: it must stay
    out = small_disk / "m.tif"
    result = run_cli(
        "infer", scene_factory(64, 64), "--out", out, "--tile", 64, "--backbone", "resnet50", "--random-weights", 0
    )
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "no space left on the device" in errors[0], result.output
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler.bin"]


def run_cli(*args: object):
    from click.testing import CliRunner

    from pipeline.cli import cli as tilewise

    return CliRunner().invoke(tilewise, [*map(str, args), "--no-progress"], catch_exceptions=False)
