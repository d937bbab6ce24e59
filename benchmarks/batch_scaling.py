"""Archive throughput: `infer` one scene at a time against `batch` (one model pool), with 1 and 2 actors.

Generates small scenes (512 x 512) and large ones, then segments them:
- sequential: one `infer_scene` call per scene in this process, as `tilewise infer a b c` used to
  run them: Ray stays up, but every call plans its scene, builds a new dataset and starts a new model
  actor (the start-up an archive pays once per scene);
- batch: `run_batch` over the whole folder, one dataset and one model pool, with 1 and then 2
  model actors (`--num-workers`);
- ceiling: `run_batch` with a 1x1 convolution instead of the network: what the readers, the
  driver's stitching and the mask writing sustain without the model.

It prints scenes/s and megapixels/s for each, a prediction for N GPU nodes (reasoning in the
README), and last `batch/sequential throughput on small scenes: X`.

    python benchmarks/batch_scaling.py [--small 200] [--large 4] [--large-size 4096] [--backbone mobilenet_v3_large]
    python benchmarks/batch_scaling.py --quick   # 16 small, 2 large of 1024 px
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch

from models import Normalization
from pipeline.batch import run_batch
from pipeline.config import InferenceConfig, ModelConfig, PipelineConfig, RayConfig, TilingConfig
from pipeline.infer import infer_scene
from pipeline.ray_env import ensure_ray

NORM = Normalization((128.0,) * 3, (40.0,) * 3)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def make_archive(root: Path, small: int, large: int, large_size: int) -> tuple[Path, Path]:
    """``small`` 512 x 512 RGB scenes in ``root/small``, ``large`` scenes of ``large_size`` in ``root/large``."""
    from _common import make_large_scene  # beside this script

    rng = np.random.default_rng(0)
    smalls, larges = root / "small", root / "large"
    smalls.mkdir(parents=True, exist_ok=True)
    for i in range(small):
        path = smalls / f"s{i:04d}.tif"
        if not path.exists():
            make_large_scene(path, 512, bands=3, block=256)
            with __import__("rasterio").open(path, "r+") as ds:  # each scene its own pixels
                ds.write(rng.integers(1, 255, (3, 64, 64), np.uint8), window=((0, 64), (0, 64)))
    for i in range(large):
        make_large_scene(larges / f"l{i}.tif", large_size, bands=3)
    return smalls, larges


def config(args: argparse.Namespace, actors: int) -> PipelineConfig:
    return PipelineConfig(
        TilingConfig(tile=args.tile, overlap=0.25),
        ModelConfig(backbone=args.backbone, classes=2, precision="fp32", random_weights=0),
        InferenceConfig(batch=args.batch, actors=actors),
        RayConfig(num_cpus=args.cpus),
    )


def megapixels(folder: Path) -> float:
    import rasterio

    total = 0
    for p in sorted(folder.glob("*.tif")):
        with rasterio.open(p) as ds:
            total += ds.width * ds.height
    return total / 1e6


def line(label: str, scenes: int, mp: float, seconds: float) -> str:
    return f"{label:<44} {scenes:4d} scenes in {seconds:7.1f} s: {scenes / seconds:6.3f} scenes/s, {mp / seconds:6.3f} MP/s"


def sequential(folder: Path, out: Path, cfg: PipelineConfig) -> float:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for scene in sorted(folder.glob("*.tif")):
        infer_scene(scene, out / f"{scene.stem}_mask.tif", cfg, normalization=NORM, progress=False)
    return time.perf_counter() - t0


def batch(folder: Path, out: Path, cfg: PipelineConfig, model: torch.nn.Module | None = None) -> float:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report = run_batch([folder], out, cfg, retries=0, model=model, normalization=NORM, progress=False)
    seconds = time.perf_counter() - t0
    assert report.exit_code == 0, report.summary()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=4)
    parser.add_argument("--large-size", type=int, default=4096)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--backbone", default="mobilenet_v3_large")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--quick", action="store_true", help="16 small scenes and 2 large ones of 1024 px")
    parser.add_argument("--data", type=Path, default=None, help="keep the generated archive here")
    args = parser.parse_args()
    if args.quick:
        args.small, args.large, args.large_size = 16, 2, 1024
    root = args.data or Path(tempfile.mkdtemp(prefix="tilewise-batch-bench-"))
    smalls, larges = make_archive(root, args.small, args.large, args.large_size)
    ensure_ray(num_cpus=args.cpus)
    cpus = int(ray.cluster_resources().get("CPU", 0))
    print(f"{cpu_name()}, {cpus} CPUs for Ray; DeepLabV3-{args.backbone} fp32, tile {args.tile}, batch {args.batch}")
    mp_small, mp_large = megapixels(smalls), megapixels(larges)
    work = Path(tempfile.mkdtemp(prefix="tilewise-batch-out-"))
    results: dict[str, float] = {}
    try:
        for kind, folder, mp, n in (("small", smalls, mp_small, args.small), ("large", larges, mp_large, args.large)):
            s = sequential(folder, work / f"seq-{kind}", config(args, 1))
            results[f"seq-{kind}"] = s
            print(line(f"sequential infer_scene, {kind}", n, mp, s), flush=True)
            for actors in (1, 2):
                b = batch(folder, work / f"batch{actors}-{kind}", config(args, actors))
                results[f"batch{actors}-{kind}"] = b
                print(line(f"batch, {actors} actor{'s' if actors > 1 else ''}, {kind}", n, mp, b), flush=True)
        torch.manual_seed(0)
        ceiling = batch(smalls, work / "ceiling", config(args, 1), model=torch.nn.Conv2d(3, 2, 1))
        print(line("batch, 1x1 conv (no model cost), small", args.small, mp_small, ceiling), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # Prediction: a GPU node runs one actor at about its measured model rate (taken here as the
    # 1-actor batch rate on large scenes, where start-up is amortised); N nodes add up until the
    # driver (stitching and writing every mask) or the readers saturate, which the 1x1-conv run bounds.
    per_actor = mp_large / results["batch1-large"]
    ceiling_mp = mp_small / ceiling
    for nodes in (1, 2, 4, 8, 16):
        predicted = min(nodes * per_actor, ceiling_mp)
        print(f"prediction, {nodes:2d} nodes of this speed: {predicted:7.2f} MP/s "
              f"({'driver/reader bound' if predicted == ceiling_mp else 'model bound'})")  # fmt: skip
    best = min(results["batch1-small"], results["batch2-small"])
    print(f"batch/sequential throughput on small scenes: {results['seq-small'] / best:.2f}")


if __name__ == "__main__":
    main()
