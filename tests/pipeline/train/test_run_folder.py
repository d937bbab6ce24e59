"""The run folder: only tilewise's files are ever replaced, nothing is written before a run starts, a resume
continues only its own run, and a run ends in one line on SIGTERM, a full disk or a failing S3 endpoint,
leaving no temporary file behind.

Runs that need a Ray of their own (signals, S3 settings in every worker) run as subprocesses, held with
gates the test controls; the rest use the session's Ray and the tiny network of ``tests.support.tiny_model``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from models.errors import ModelError
from models.train import load_checkpoint
from pipeline.cli import cli
from pipeline.cli.train import load_train_config
from pipeline.train import DataConfig, ModelTrainConfig, OptimConfig, RunTrainConfig, TrainConfig, train
from pipeline.train.outputs import RUN_FILES, owned
from pipeline.train.run import resolve_paths
from tests.conftest import write_scene
from tests.support.tiny_model import tiny_net, unbuildable
from tiling.errors import ConfigError, SinkError

ROOT = Path(__file__).resolve().parents[3]
#: The flags of a tiny run through the CLI (``--backbone`` keeps it short where no model_fn is handed in).
TINY = ["--init", "none", "--tile", "16", "--block", "32", "--val-fraction", "0.25", "--samples", "4",
        "--batch-size", "4", "--lr", "0.01", "--force", "--augment", "none", "--precision", "fp32",
        "--backbone", "mobilenet_v3_large", "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """64x64 RGB whose class is 1 where red is bright."""
    d = tmp_path_factory.mktemp("scene")
    img = np.random.default_rng(3).integers(1, 255, (3, 64, 64), dtype=np.uint8)
    return write_scene(d / "img.tif", img, block=None), write_scene(d / "lbl.tif", (img[:1] > 128).astype(np.uint8))


def _config(scene: tuple[Path, Path], out: str | Path, **run: object) -> TrainConfig:
    data = DataConfig(image=(str(scene[0]),), labels=(str(scene[1]),), tile=16, block=32, val_fraction=0.25, samples=4)
    return TrainConfig(
        data=data,
        model=ModelTrainConfig(init="none", precision="fp32"),
        optim=OptimConfig(lr=1e-2, batch_size=4, epochs=2, force=True),
        run=RunTrainConfig(out=str(out), augment="none", **run),  # type: ignore[arg-type]
    )


def files(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` but Ray's own storage, by relative name, with its SHA-256."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".ray" not in p.relative_to(folder).parts
    }


@pytest.fixture(scope="module")
def stopped(ray_session, scene, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder after epoch 1 of 2 (``stop_after``), to be resumed."""
    out = tmp_path_factory.mktemp("runs") / "stopped"
    train(_config(scene, out, stop_after=1), progress=False, model_fn=tiny_net)
    return out


def invoke(*args: object):
    return CliRunner().invoke(cli, ["train", *map(str, args)], obj={"model_fn": tiny_net})


def one_error(result) -> str:
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: "), line
    return line


@pytest.mark.parametrize("name", ["config.yaml", "model.pt", "metrics.json", "curves.png"])
def test_a_working_folder_with_the_users_files_is_refused_and_left_as_it_was(tmp_path, scene, name) -> None:
    work = tmp_path / "work"
    work.mkdir()
    if name == "model.pt":
        torch.save({"weights": torch.ones(2)}, work / name)
    else:
        (work / name).write_text("lr: 5e-5\n" if name == "config.yaml" else "{}\n")
    before = files(work)
    line = one_error(invoke("--image", scene[0], "--labels", scene[1], "--out", work, *TINY))
    assert f"{work / name}: exists and was not written by tilewise, so it is never replaced" in line
    assert files(work) == before and sorted(p.name for p in work.iterdir()) == [name]


def test_nothing_is_written_before_the_run_starts(ray_session, tmp_path, scene) -> None:
    """A run refused once Ray is up (its workers would leave no CPU for reading) leaves no folder behind,
    and an empty folder empty; so does a run whose worker fails before its first epoch ends."""
    for out in (tmp_path / "new", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        cfg = _config(scene, out, num_workers=2, cpus_per_worker=1.0)
        cfg = TrainConfig(data=replace(cfg.data, samples=8), model=cfg.model, optim=cfg.optim, run=cfg.run)
        with pytest.raises(ConfigError, match="2 workers x 1 CPUs leave no CPU of 2 for reading tiles"):
            train(cfg, progress=False, model_fn=tiny_net)
        with pytest.raises(ModelError, match="this network cannot be built here"):
            train(_config(scene, out), progress=False, model_fn=unbuildable)
        assert list(out.iterdir()) == [] if out.name == "empty" else not out.exists()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"tile": 32, "block": 64}, "the run was trained with tile 16, this call gives 32"),
        ({"classes": 3}, "the run was trained with classes 2, this call gives 3"),
        ({"image": "copy"}, "the run was trained with image ["),
        ({"labels": "copy"}, "the run was trained with labels ["),
        ({"stop_after": 1}, "stop_after: 1 epochs are already done"),
    ],
)
def test_a_failed_resume_leaves_the_run_as_it_was(ray_session, stopped, scene, tmp_path, change, match) -> None:
    before = files(stopped)
    data = dict(image=(str(scene[0]),), labels=(str(scene[1]),), tile=16, block=32, val_fraction=0.25, samples=4)
    for key in ("image", "labels"):
        if change.get(key) == "copy":  # the same pixels under another name is another scene
            copy = tmp_path / f"copy_{Path(data[key][0]).name}"
            copy.write_bytes(Path(data[key][0]).read_bytes())
            change = {key: (str(copy),)}
    stop_after = change.pop("stop_after", None)
    cfg = _config(scene, stopped, resume=str(stopped / "checkpoint.pt"), stop_after=stop_after)
    cfg = TrainConfig(data=DataConfig(**{**data, **change}), model=cfg.model, optim=cfg.optim, run=cfg.run)
    with pytest.raises(ConfigError, match=match.replace("[", r"\[")) as e:
        train(cfg, progress=False, model_fn=tiny_net)
    assert "checkpoint.pt" in str(e.value) or "stop_after" in str(e.value)
    assert files(stopped) == before


def test_the_run_files_are_tilewises_and_config_yaml_repeats_the_run(stopped, scene) -> None:
    assert all(owned(stopped / name) for name in RUN_FILES)
    assert (stopped / "config.yaml").read_text().startswith("# written by tilewise train")
    again = load_train_config(stopped / "config.yaml", {}, set())
    assert again.to_flat() == resolve_paths(_config(scene, stopped, stop_after=1).validate()).to_flat()
    assert load_checkpoint(stopped / "checkpoint.pt")["extra"]["run"]["tile"] == 16


def test_a_diverged_loss_ends_the_run_keeping_the_last_finished_epoch(ray_session, tmp_path, scene) -> None:
    """A finite but absurd rate (with --force) sends the weights to inf after one step: epoch 2's loss is NaN."""
    out = tmp_path / "run"
    cfg = _config(scene, out)
    cfg = TrainConfig(data=cfg.data, model=cfg.model, optim=replace(cfg.optim, lr=1e30), run=cfg.run)
    with pytest.raises(ConfigError, match=r"training diverged: the training loss of epoch 2 is (nan|inf); lower --lr"):
        train(cfg, progress=False, model_fn=tiny_net)
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    weights = torch.load(out / "model.pt", weights_only=True)["model"]
    assert all(bool(torch.isfinite(w).all()) for w in weights.values()), "no NaN model is exported"


def test_an_s3_out_is_one_line(tmp_path, scene) -> None:
    line = one_error(invoke("--image", scene[0], "--labels", scene[1], "--out", "s3://bucket/run", *TINY))
    assert "out: s3://bucket/run: a run writes its checkpoints to a folder on a file system" in line


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


def test_a_full_disk_while_checkpointing_is_one_line_and_leaves_nothing(ray_session, small_disk, scene) -> None:
    filler = small_disk / "filler.bin"
    filler.write_bytes(b"x" * (56 * 1024))  # the user's own file: it stays; a checkpoint does not fit beside it
    with pytest.raises(SinkError, match=r"checkpoint\.pt: no space left on the device while writing it") as e:
        train(_config(scene, small_disk / "run"), progress=False, model_fn=tiny_net)
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler.bin"], "no run folder, no temporary file"


def _train_process(tmp_path: Path, args: list[str], model_fn: str) -> subprocess.Popen:
    """``tilewise train ARGS`` in a fresh process (its own Ray), with ``model_fn`` (Python) as its model builder."""
    script = textwrap.dedent(f"""
        from pathlib import Path
        from pipeline.cli import cli
        from tests.support.models import BuildGate, Gate
        model_fn = {model_fn}
        cli.main(args={["train", *args]!r}, obj={{"model_fn": model_fn}}, prog_name="tilewise")
    """)
    return subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_sigterm_ends_a_run_with_143_keeping_the_last_epoch(tmp_path, scene) -> None:
    """Held by a gated model in epoch 2, after epoch 1's files are written: SIGTERM ends it in one line."""
    gate_dir = tmp_path / "gate"
    gate_dir.mkdir()
    out = tmp_path / "run"
    args = ["--image", str(scene[0]), "--labels", str(scene[1]), "--out", str(out), "--epochs", "3", "--num-cpus", "2",
            *TINY]  # fmt: skip
    from tests.support.models import Gate

    gate = Gate(gate_dir)
    gate.allow(1)
    run = _train_process(tmp_path, args, f"Gate(Path({str(gate_dir)!r})).model")
    allowed = 1
    while True:  # one forward pass at a time until epoch 1's checkpoint is written and epoch 2 waits
        gate.wait_until_held(allowed + 1)
        if (out / "checkpoint.pt").exists():
            break
        if run.poll() is not None or allowed > 100:
            raise AssertionError(f"the run never finished epoch 1: {run.communicate(timeout=30)[0]}")
        allowed += 1
        gate.allow(allowed)
    run.send_signal(signal.SIGTERM)
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 143, output
    assert output.strip().splitlines() == ["terminated; the last finished epoch's checkpoint is kept"], output
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    assert sorted(p.name for p in out.iterdir() if p.name != ".ray") == sorted(RUN_FILES), "no temporary file"


@pytest.fixture
def moto(monkeypatch):
    """A moto S3 server on a free port, in a process of its own, with GDAL's and boto3's settings pointing at it."""
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("moto's server did not start")
                time.sleep(0.1)
        env = {
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_S3_ENDPOINT": f"127.0.0.1:{port}", "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE",
        }  # fmt: skip
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        client = boto3.client("s3")
        client.create_bucket(Bucket="scenes")
        yield server, client
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_an_s3_endpoint_that_fails_mid_run_is_one_line(tmp_path, scene, moto) -> None:
    """The image is read from S3; the endpoint goes away once the driver has planned, before a worker reads."""
    server, client = moto
    client.upload_file(str(scene[0]), "scenes", "img.tif")
    from tests.support.models import BuildGate

    gate = BuildGate(tmp_path)
    out = tmp_path / "run"
    args = ["--image", "/vsis3/scenes/img.tif", "--labels", str(scene[1]), "--out", str(out), "--num-cpus", "2", *TINY]
    run = _train_process(tmp_path, args, f"BuildGate(Path({str(tmp_path)!r})).builder()")
    try:
        gate.wait_until_held()
    except AssertionError:
        raise AssertionError(run.communicate(timeout=30)[0]) from None
    server.terminate()
    server.wait(timeout=30)
    gate.open()
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 1 and "Traceback" not in output, output
    (line,) = output.strip().splitlines()
    assert line.startswith("Error: /vsis3/scenes/img.tif:") and "127.0.0.1" in line, line
    assert not out.exists(), "the run wrote nothing, and the folder it made is gone"
