"""Seam QA of a trained model, with and without test-time augmentation, and what TTA costs.

1. Trains a small model on the demo scene with the demo's recipe (``pipeline/demo.py``:
   DeepLabV3-MobileNetV3-Large from random init, 96 px tiles, lr 2e-3), fewer epochs
   (``--epochs``, 10 by default), unless ``WORKDIR/run/model.pt`` exists.
2. Segments a second demo scene (another seed: pixels the model never saw) with
   ``tilewise infer --qa``, once with ``--tta none`` and once with ``--tta flips``, and
   reads the overlap disagreement from each run's ``<mask>.qa.json``.
3. Times the predictor alone on the same tiles, with and without TTA: seconds per tile.

    .venv/bin/python benchmarks/seam_qa.py [--workdir DIR] [--epochs N]

Everything runs on this worktree's code (``python -m pipeline`` from the repository root).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.demo import CLASS_NAMES, DEMO_BATCH, DEMO_BLOCK, DEMO_INFER_TILE, DEMO_LR, DEMO_TILE, make_scene  # noqa: E402

#: The scene segmented for QA: the demo's generator with another layout than the training scene.
QA_SEED = 7


def train_model(workdir: Path, epochs: int, size: int) -> Path:
    """The demo's recipe with ``epochs`` epochs; returns the exported model."""
    from pipeline.train import DataConfig, ModelTrainConfig, OptimConfig, RunTrainConfig, TrainConfig, train

    model = workdir / "run" / "model.pt"
    metrics = workdir / "run" / "metrics.json"
    if model.exists() and metrics.exists() and len(json.loads(metrics.read_text())["epochs"]) >= epochs:
        history = json.loads(metrics.read_text())["epochs"]
        print(f"model: {model} (trained {len(history)} epochs, validation mIoU {history[-1]['miou']:.3f}; "
              "delete the run folder to train again)")  # fmt: skip
        return model
    scene = make_scene(workdir / "train.tif", size=size, truth_path=workdir / "train_truth.tif")
    data = DataConfig(
        image=(str(scene),), labels=(str(workdir / "train_truth.tif"),), classes=4, class_names=CLASS_NAMES,
        tile=DEMO_TILE, block=DEMO_BLOCK, val_fraction=0.25, windows="random", samples=96, balanced=True,
    )  # fmt: skip
    cfg = TrainConfig(
        data=data,
        model=ModelTrainConfig(backbone="mobilenet_v3_large", init="none"),
        optim=OptimConfig(lr=DEMO_LR, batch_size=DEMO_BATCH, epochs=epochs, force=True),
        run=RunTrainConfig(out=str(workdir / "run"), num_workers=2, augment="none"),
    )
    t0 = time.perf_counter()
    result = train(cfg, progress=False)
    print(
        f"trained {epochs} epochs in {time.perf_counter() - t0:.0f} s; validation mIoU {result.history[-1]['miou']:.3f}"
    )
    return Path(result.model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tilewise-seam-qa")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--train-only", action="store_true")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = train_model(args.workdir, args.epochs, args.size)
    if args.train_only:
        return
    run_qa(args.workdir, model, args.size)


def run_qa(workdir: Path, model: Path, size: int) -> None:
    """Infer with --qa, without and with TTA; print both disagreements and the cost of TTA."""
    scene = make_scene(workdir / "qa_scene.tif", size=size, seed=QA_SEED, truth_path=workdir / "qa_truth.tif")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    figures = {}
    for tta in ("none", "flips"):
        mask = workdir / f"mask_tta_{tta}.tif"
        cmd = [
            sys.executable, "-m", "pipeline", "infer", str(scene), "--out", str(mask), "--weights", str(model),
            "--tile", str(DEMO_INFER_TILE), "--overlap", "0.25", "--qa", "--tta", tta, "--overwrite", "--no-progress",
        ]  # fmt: skip
        print("$", " ".join(cmd[1:]))
        t0 = time.perf_counter()
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        print(out.stdout.strip() or out.stderr.strip())
        if out.returncode:
            raise SystemExit(out.stderr)
        qa = json.loads(mask.with_name(f"{mask.stem}.qa.json").read_text())
        figures[tta] = (qa["disagreement"], time.perf_counter() - t0, _miou(mask, scene, workdir / "qa_truth.tif"))
    for tta, (dis, secs, miou) in figures.items():
        print(f"--tta {tta}: overlap disagreement {dis['share']:.4f} "
              f"({dis['pixels']} of {dis['overlap_pixels']} overlap pixels), mIoU against the truth {miou:.3f}, "
              f"run {secs:.1f} s")  # fmt: skip
    time_predictor(scene, model)


def _miou(mask: Path, scene: Path, truth: Path) -> float:
    """The mask's mIoU against the generated truth (the nodata wedge ignored)."""
    from pipeline.evaluate import score_mask
    from pipeline.train import DataConfig

    data = DataConfig(image=(str(scene),), labels=(str(truth),), classes=4, class_names=CLASS_NAMES)
    return float(score_mask(mask, scene, truth, data).miou())


def time_predictor(scene: Path, model: Path, tiles: int = 4, rounds: int = 8) -> None:
    """Seconds per tile of the predictor alone (this process, all cores), without and with TTA.

    The two modes alternate for ``rounds`` rounds and the fastest round of each counts, so a
    burst of load from other processes does not land on one mode only.
    """
    import numpy as np
    import rasterio
    import torch

    from models import Normalization, Predictor, build_model
    from models.train import read_export

    info = read_export(str(model))
    assert info is not None, f"{model}: not a tilewise export"
    net = build_model(info.backbone, info.classes, info.in_channels, str(model))
    norm = Normalization(tuple(info.mean), tuple(info.std))
    t = DEMO_INFER_TILE
    with rasterio.open(scene) as ds:
        img = ds.read(window=((0, t), (0, t))).astype(np.float32)
    batch = np.repeat(img[None], tiles, axis=0)
    torch.set_num_threads(os.cpu_count() or 1)
    predictors = {tta: Predictor(net, norm, "fp32", tta=tta, device="cpu") for tta in ("none", "flips")}
    best = dict.fromkeys(predictors, float("inf"))
    for p in predictors.values():
        p.scores(batch[:2])  # warm up
    for _ in range(rounds):
        for tta, p in predictors.items():
            t0 = time.perf_counter()
            p.scores(batch)
            best[tta] = min(best[tta], (time.perf_counter() - t0) / tiles)
    for tta, seconds in best.items():
        print(f"predictor, {t} px tiles, batch {tiles}, --tta {tta}: {seconds:.3f} s per tile")
    print(f"TTA cost: x{best['flips'] / best['none']:.2f} the seconds per tile")


def _timing_only() -> None:
    workdir = Path(sys.argv[2])
    time_predictor(workdir / "qa_scene.tif", workdir / "run" / "model.pt")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--timing-only"]:  # the predictor's timing alone, on an existing workdir
        _timing_only()
    else:
        main()
