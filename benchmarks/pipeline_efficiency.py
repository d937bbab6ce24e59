"""Throughput of the whole pipeline against the bare model, side by side.

Runs DeepLabV3 (ResNet-101 by default) over the same tiles twice:
- bare: a loop of batched forward passes on pre-read, pre-normalised tensors
  (same precision, channels_last, threads and batch size), after a warm-up;
- pipeline: `infer_scene` end to end: Ray read tasks, the actor that builds
  the model, stitching and the COG write, on the embedded Ray.
It also prints the model actor's own time (its batches, timed where they run)
against the bare loop's: the model slowed by what runs beside it, apart from
the time spent on everything else (start-up, the last tiles' stitching, the
write). The last line is `pipeline/bare throughput: X` (1.0 = the pipeline
costs nothing).

    python benchmarks/pipeline_efficiency.py [--size 4096] [--tile 512] [--batch 4] [--backbone resnet101]
        [--precision auto]

The precision defaults to tilewise's default, ``auto`` (bf16 only where the
hardware computes it natively); the output names the precision that ran and
the CPU it ran on.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models import Normalization, Predictor, build_model, resolve_precision
from pipeline import ray_env
from pipeline.config import InferenceConfig, ModelConfig, PipelineConfig, RayConfig, TilingConfig
from pipeline.demo import make_scene
from pipeline.infer import infer_scene
from tiling import TileGrid, open_source
from tiling.core.stats import sample_band_stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name


def bare(scene: Path, cfg: PipelineConfig, threads: int) -> tuple[int, float]:
    """Tiles per second of the model alone on pre-read tiles."""
    with open_source(scene) as src:
        grid = TileGrid(src.shape, cfg.tiling.tile, cfg.tiling.overlap, block=src.block_shape)
        norm = Normalization(*sample_band_stats(src))
        reads = [src.read(w) for w in grid.windows]
    images = np.stack([d for d, _ in reads])
    valid = np.stack([v for _, v in reads])
    torch.set_num_threads(threads)
    model = build_model(cfg.model.backbone, cfg.model.classes, images.shape[1])
    predictor = Predictor(
        model, norm, cfg.model.precision, cfg.model.channels_last, "cpu" if not torch.cuda.is_available() else None
    )
    b = cfg.inference.batch
    predictor(images[:b], valid[:b])  # warm-up (oneDNN kernel selection)
    t0 = time.perf_counter()
    for i in range(0, len(images), b):
        predictor(images[i : i + b], valid[i : i + b])
    return len(images), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--backbone", default="resnet101")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tilewise-bench")
    args = ap.parse_args()
    scene = make_scene(args.workdir / f"demo_{args.size}.tif", size=args.size)
    cpus = os.cpu_count() or 1
    cfg = PipelineConfig(
        TilingConfig(tile=args.tile, overlap=0.25),
        ModelConfig(backbone=args.backbone, classes=2, precision=args.precision, random_weights=0),
        InferenceConfig(batch=args.batch),
        RayConfig(num_cpus=cpus),
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(args.precision, device)
    how = f"{precision}" + (" (chosen by auto)" if args.precision == "auto" else "")
    print(f"machine: {cpu_name()}, {device}; precision {how}", flush=True)
    n, secs = bare(scene, cfg, threads=cpus)
    print(
        f"bare:     {n} tiles in {secs:6.1f} s = {n / secs:.3f} tiles/s ({args.backbone}, {precision}, batch {args.batch}, {args.tile} px)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(dir=args.workdir) as out:
        ray_env.ensure_ray(num_cpus=cpus)  # up before the clock starts, started as the CLI starts it
        result = infer_scene(scene, Path(out) / "mask.tif", cfg, progress=False)
        ray_env.shutdown()
    print(
        f"pipeline: {result.tiles} tiles in {result.seconds:6.1f} s = {result.tiles_per_second:.3f} tiles/s (read, infer, stitch, COG write; actor start-up included)"
    )
    # The model actor's own time (normalise, forward, softmax per batch) against the bare loop's, which does the
    # same work: where the pipeline's time goes, the model slowed by what runs beside it, or everything else.
    print(
        f"model time in the actor: {result.model_seconds:6.1f} s (bare loop {secs:.1f} s, x{result.model_seconds / secs:.2f}); "
        f"the rest of the pipeline's time: {result.seconds - result.model_seconds:.1f} s"
    )
    print(f"pipeline/bare throughput: {result.tiles_per_second / (n / secs):.2f}")


if __name__ == "__main__":
    main()
