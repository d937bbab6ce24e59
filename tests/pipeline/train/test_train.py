"""Training on Ray Train with the session's Ray (2 CPUs): DDP equivalence, exact resume, the export."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from models.train import read_export
from pipeline.train import DataConfig, ModelTrainConfig, OptimConfig, RunTrainConfig, TrainConfig, train
from tests.conftest import write_scene
from tests.support.tiny_model import tiny_net


@pytest.fixture(scope="module")
def colour_scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """64x64 RGB whose class is 1 where red is bright: learnable, every pixel labelled."""
    d = tmp_path_factory.mktemp("scene")
    rng = np.random.default_rng(3)
    img = rng.integers(1, 255, (3, 64, 64), dtype=np.uint8)
    labels = (img[0] > 128).astype(np.uint8)[None]
    return write_scene(d / "img.tif", img, block=None), write_scene(d / "lbl.tif", labels, block=None)


def _config(scene: tuple[Path, Path], out: Path, workers: int, batch: int, **run: object) -> TrainConfig:
    data = DataConfig(
        image=(str(scene[0]),), labels=(str(scene[1]),), classes=2, tile=16, block=32, val_fraction=0.25,
        samples=4,
    )  # fmt: skip
    return TrainConfig(
        data=data,
        model=ModelTrainConfig(init="none", precision="fp32"),
        optim=OptimConfig(lr=1e-2, batch_size=batch, epochs=2, force=True),
        run=RunTrainConfig(out=str(out), num_workers=workers, augment="none", **run),  # type: ignore[arg-type]
    )


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


@pytest.fixture(scope="module")
def one_worker(ray_session, colour_scene, tmp_path_factory: pytest.TempPathFactory):
    """The reference: 1 worker, batch 4, 2 epochs uninterrupted."""
    out = tmp_path_factory.mktemp("runs") / "one"
    return train(_config(colour_scene, out, 1, 4), progress=False, model_fn=tiny_net)


def test_two_ddp_workers_equal_one_worker_with_twice_the_batch(ray_session, colour_scene, one_worker, tmp_path):
    # Each epoch is one step over the same 4 tiles: 2 workers x batch 2 must average their
    # gradients into exactly the 1 x batch 4 gradient (the loss is a mean over equally many
    # labelled pixels per worker; the model has no BatchNorm, whose per-worker statistics differ).
    two = train(_config(colour_scene, tmp_path / "two", 2, 2), progress=False, model_fn=tiny_net)
    a, b = _weights(one_worker.model), _weights(two.model)
    start = tiny_net().state_dict()
    torch.manual_seed(0)
    moved = max(float((a[k] - tiny_net().state_dict()[k]).abs().max()) for k in a)
    assert moved > 1e-3, "training did not change the weights, so the comparison proves nothing"
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert [h["val_loss"] for h in two.history] == pytest.approx([h["val_loss"] for h in one_worker.history], rel=1e-5)
    assert start.keys() == a.keys()


def test_resume_after_epoch_one_of_two_is_exact(ray_session, colour_scene, one_worker, tmp_path, monkeypatch):
    # relative paths, as typed in a shell: Ray's workers run in another folder, so the driver resolves them
    monkeypatch.chdir(tmp_path)
    scene = tuple(Path(os.path.relpath(p, tmp_path)) for p in colour_scene)
    first = train(_config(scene, Path("stopped"), 1, 4, stop_after=1), progress=False, model_fn=tiny_net)
    assert [h["epoch"] for h in first.history] == [1]
    resume = "stopped/checkpoint.pt"
    resumed = train(_config(scene, Path("stopped"), 1, 4, resume=resume), progress=False, model_fn=tiny_net)
    a, b = _weights(one_worker.model), _weights(resumed.model)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    keys = ("train_loss", "val_loss", "miou", "pixel_accuracy", "iou", "confusion")
    assert [{k: h[k] for k in keys} for h in resumed.history] == [{k: h[k] for k in keys} for h in one_worker.history]


def test_run_writes_metrics_plots_config_and_an_export(one_worker):
    out = one_worker.out
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    last = metrics["epochs"][-1]
    assert set(last["iou"]) == {"class_0", "class_1"} and 0 <= last["miou"] <= 1
    assert sum(map(sum, last["confusion"])) == one_worker.val_tiles * 16 * 16
    for name in ("curves.png", "confusion.png", "config.yaml", "checkpoint.pt"):
        assert (out / name).stat().st_size > 0
    info = read_export(one_worker.model)
    assert info is not None and info.classes == 2 and info.in_channels == 3 and len(info.mean) == 3
    # the normalisation is the training scenes' statistics, not a default
    assert 100 < info.mean[0] < 160 and 50 < info.std[0] < 90


def test_a_relative_init_checkpoint_is_found_by_the_workers(ray_session, colour_scene, tmp_path, monkeypatch):
    from models import build_model

    monkeypatch.chdir(tmp_path)
    torch.save(build_model("mobilenet_v3_large", 2, 3).state_dict(), tmp_path / "start.pt")
    data = DataConfig(image=(str(colour_scene[0]),), labels=(str(colour_scene[1]),), tile=32, block=32, samples=2)
    cfg = TrainConfig(
        data=data,
        model=ModelTrainConfig(backbone="mobilenet_v3_large", init="start.pt", precision="fp32", precise_bn=0),
        optim=OptimConfig(lr=1e-4, batch_size=2, epochs=1),
        run=RunTrainConfig(out="run", augment="none"),
    )
    result = train(cfg, progress=False)
    assert result.out == tmp_path / "run" and [h["epoch"] for h in result.history] == [1]
