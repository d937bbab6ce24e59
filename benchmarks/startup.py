"""Start-up: how long from a fresh process to the first stitched tile, and for a second scene.

A new Python process segments a small generated RGB scene (1024^2 by default)
with a 1x1-conv model through ``infer_scene`` and the embedded Ray (2 CPUs),
then a second scene in the same process. Printed, from the start of the
process: when tilewise was imported, when the first scene's first tiles were
stitched, and when it was done; for the second scene, the time from its call
to its first stitched tile (Ray is up then; the model actor is not, as each
call is one Ray Data dataset). A ``tilewise batch`` or ``infer_many`` run
pays the actor's start once for all its scenes.

    python benchmarks/startup.py [--size 1024] [--workdir /tmp/tilewise-bench]   (~30 s)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def child(workdir: Path, scenes: list[Path]) -> None:
    t0 = time.perf_counter()
    import torch

    from pipeline.config import InferenceConfig, ModelConfig, PipelineConfig, RayConfig, TilingConfig
    from pipeline.infer import infer_scene

    imported = time.perf_counter() - t0
    cfg = PipelineConfig(
        TilingConfig(tile=512, overlap=0.25, blend="gaussian"),
        ModelConfig(classes=2, precision="fp32"),
        InferenceConfig(batch=8),
        RayConfig(num_cpus=2),
    )
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 2, kernel_size=1)
    lines = [f"imports (torch, tilewise): {imported:.1f} s"]
    for i, scene in enumerate(scenes):
        out = workdir / f"startup_mask_{i}.tif"
        for old in workdir.glob(f"{out.stem}.*"):
            old.unlink()
        called = time.perf_counter()
        result = infer_scene(scene, out, cfg, model=model, progress=False)
        if i == 0:
            lines.append(f"first scene: first stitched tile {called - t0 + result.first_result_seconds:.1f} s after "
                         f"the process started ({result.first_result_seconds:.1f} s after the call), done after "
                         f"{time.perf_counter() - t0:.1f} s ({result.tiles} tiles)")  # fmt: skip
        else:
            lines.append(f"second scene in the same process: first stitched tile {result.first_result_seconds:.1f} s "
                         f"after the call, done after {time.perf_counter() - called:.1f} s ({result.tiles} tiles)")  # fmt: skip
    print("\n".join(lines), flush=True)
    # measured; stop Ray for good (os._exit left its agents running for a minute, taking CPU)
    from pipeline.ray_env import shutdown

    shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tilewise-bench")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    from _common import cpu_name, make_large_scene

    # two files of the same size (and pixels), made before the measured process starts
    scenes = [make_large_scene(args.workdir / f"startup_{args.size}_{i}.tif", args.size, bands=3) for i in (0, 1)]
    if args.child:
        child(args.workdir, scenes)
        return

    from models import cpu_has_native_bf16

    print(f"machine: {cpu_name()}; CPU native bf16: {cpu_has_native_bf16()}; 1x1-conv model in fp32, 512 px tiles; "
          f"load average before the run: {os.getloadavg()[0]:.1f}")  # fmt: skip
    cmd = [sys.executable, __file__, "--child", "--size", str(args.size), "--workdir", str(args.workdir)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    print(done.stdout.strip())


if __name__ == "__main__":
    main()
