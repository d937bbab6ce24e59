"""Peak memory of the whole pipeline against scene size, with a cheap model.

Generates GeoTIFF scenes of 4096^2, 16384^2 and 32768^2 pixels (uint8, tiled,
deflate; cached under --workdir), runs `infer_scene` on each in a fresh
process with its own embedded Ray, and prints the peak memory of the process
tree (driver + every Ray process, PSS-summed) and of the driver alone. The
last line is `peak RSS ratio 32768/4096: R`; bounded memory means R close to 1.

    python benchmarks/memory_vs_scene.py [--sizes 4096 16384 32768] [--workdir /tmp/tilewise-bench]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def child(size: int, workdir: Path, tile: int, batch: int) -> None:
    import ray
    import torch
    from _common import TreeMemorySampler, make_large_scene

    from pipeline.config import InferenceConfig, ModelConfig, PipelineConfig, RayConfig, TilingConfig
    from pipeline.infer import infer_scene

    scene = make_large_scene(workdir / f"scene_{size}.tif", size)
    cfg = PipelineConfig(
        TilingConfig(tile=tile, overlap=0.25),
        ModelConfig(classes=2, precision="fp32"),
        InferenceConfig(batch=batch),
    )
    with tempfile.TemporaryDirectory(dir=workdir) as out_dir, TreeMemorySampler() as mem:
        # the pipeline's embedded Ray, with its defaults (2 CPUs like CI)
        cfg = dataclasses.replace(cfg, ray=RayConfig(num_cpus=2))
        model = torch.nn.Conv2d(1, 2, kernel_size=1)  # cheap: the pipeline's own memory dominates
        result = infer_scene(scene, Path(out_dir) / "mask.tif", cfg, model=model, progress=False)
        mem._sample()
        ray.shutdown()
    print(json.dumps(dict(size=size, tiles=result.tiles, seconds=result.seconds, spills=result.stitch_spills,
                          stitch=result.stitch_peak_bytes, peak_total=mem.peak_total, peak_driver=mem.peak_driver)))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 32768])
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tilewise-bench")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.child:
        child(args.child, args.workdir, args.tile, args.batch)
        return
    rows = []
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--child", str(size), "--workdir", str(args.workdir),
               "--tile", str(args.tile), "--batch", str(args.batch)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"size {size} failed:\n{out.stderr[-3000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{size:>6}^2 px  {row['tiles']:>6} tiles  {row['seconds']:7.1f} s  "
            f"{row['tiles'] / row['seconds']:7.1f} tiles/s  peak RSS total {row['peak_total'] / 2**30:.2f} GiB  "
            f"driver {row['peak_driver'] / 2**30:.2f} GiB  stitch {row['stitch'] / 2**20:.0f} MiB ({row['spills']} spills)",
            flush=True,
        )
    first, last = rows[0], rows[-1]
    print(f"peak RSS ratio {last['size']}/{first['size']}: {last['peak_total'] / first['peak_total']:.2f}")


if __name__ == "__main__":
    main()
