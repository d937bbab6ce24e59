"""How much the pipeline costs around a model that costs nothing: tilewise vs the I/O floor vs MONAI.

One generated RGB scene (8192^2 by default, tiled deflate GeoTIFF), three
ways in one run, each in a fresh process, with the same cheap 1x1-conv model,
512 px tiles, overlap 0.25 and gaussian blending:

1. the I/O floor: rasterio windowed reads of every tile of the same grid,
   plus writing a uint8 label COG the way tilewise's sink does (tiled GTiff,
   then GDAL's COG copy);
2. tilewise (`infer_scene`, its own embedded Ray, 2 CPUs);
3. MONAI's `sliding_window_inference` (gaussian) on the whole scene in memory,
   plus the same COG write: the peer a user would otherwise pick.

Each line gives seconds, megapixels per second, CPU core-seconds per megapixel
(the CPU time of the process and all its children, Ray's included) and peak
memory (PSS summed over the process tree). tilewise also reports when its
first tiles were stitched. Every way runs again on a half-size scene: the
difference between the two runs is the steady state, what one more
megapixel costs once start-up (imports, Ray and its daemons, the model
actor: paid once per run, or once per archive run) has cancelled out. Then
the ratios, whole-run and steady, and how many CPU cores would keep one H100
busy at DeepLabV3-ResNet101's compute limit at the steady cost per pixel.

    python benchmarks/pipeline_ceiling.py [--size 8192] [--workdir /tmp/tilewise-bench]   (~2 min)
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: DeepLabV3-ResNet101: 258.74 GFLOPs at 520x520 (torchvision), i.e. ~957 GFLOP per megapixel.
GFLOP_PER_MP = 258.74 / (520 * 520 / 1e6)
#: An H100 SXM's dense bf16 tensor throughput, TFLOP/s (NVIDIA's datasheet).
H100_TFLOPS = 989.0
TILE, OVERLAP, BATCH = 512, 0.25, 8


def _cpu_seconds() -> float:
    """CPU time of this process and its descendants, living and reaped."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:4])  # user, system, children_user, children_system
    for child in me.children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _write_cog(labels_by_block, shape, profile_src: Path, out: Path) -> None:
    """Write uint8 labels as the COG sink does: windowed writes into a tiled GTiff, then the COG copy."""
    from tiling.formats import open_sink, open_source
    from tiling.formats.base import SinkRequest

    with open_source(profile_src) as src:
        sink = open_sink(out, src, "cog", SinkRequest(("a", "b")))
    for window, labels in labels_by_block(sink.block):
        sink.write(window, labels, None)
    sink.finalize()


def way_io_floor(scene: Path, out: Path) -> dict:
    import numpy as np

    from tiling.core import TileGrid, plan_windows
    from tiling.core.windows import clip
    from tiling.formats import open_source

    with open_source(scene) as src:
        grid = TileGrid(src.shape, TILE, OVERLAP, "shift", src.block_shape)
        for w in grid.windows:
            src.read(w)
        shape = src.shape

    def blocks(block):
        for w in plan_windows(shape, block, block, edge="pad"):
            w = clip(w, shape)
            yield w, np.zeros(w.shape, np.uint8) + (w.start[0] // block[0]) % 2

    _write_cog(blocks, shape, scene, out)
    return {"tiles": len(grid)}


def way_tilewise(scene: Path, out: Path) -> dict:
    import torch

    from pipeline.config import InferenceConfig, ModelConfig, PipelineConfig, RayConfig, TilingConfig
    from pipeline.infer import infer_scene

    cfg = PipelineConfig(
        TilingConfig(tile=TILE, overlap=OVERLAP, blend="gaussian"),
        ModelConfig(classes=2, precision="fp32"),
        InferenceConfig(batch=BATCH),
        RayConfig(num_cpus=2),
    )
    torch.manual_seed(0)
    result = infer_scene(scene, out, cfg, model=torch.nn.Conv2d(3, 2, kernel_size=1), progress=False)
    return {"tiles": result.tiles, "first_tiles_s": result.first_result_seconds}


def way_monai(scene: Path, out: Path) -> dict:
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference

    from tiling.core import plan_windows
    from tiling.core.windows import clip
    from tiling.formats import open_source

    torch.set_num_threads(2)
    with open_source(scene) as src:
        from tiling.core import Window

        image, _ = src.read(Window((0, 0), src.shape))
        shape = src.shape
    x = torch.from_numpy(image).float()[None]
    x = (x - x.mean(dim=(2, 3), keepdim=True)) / x.std(dim=(2, 3), keepdim=True)
    torch.manual_seed(0)
    # the model in channels_last, as tilewise runs it: with 2 threads torch's NCHW 1x1 convolution
    # of 3 bands takes 61 ms a batch here against 5 ms in channels_last, which would slow MONAI down
    model = torch.nn.Conv2d(3, 2, kernel_size=1).eval().to(memory_format=torch.channels_last)

    def predict(windows: torch.Tensor) -> torch.Tensor:
        return model(windows.contiguous(memory_format=torch.channels_last))

    with torch.inference_mode():
        scores = sliding_window_inference(x, (TILE, TILE), BATCH, predict, overlap=OVERLAP, mode="gaussian")
    labels = scores[0].argmax(0).to(torch.uint8).numpy()

    def blocks(block):
        for w in plan_windows(shape, block, block, edge="pad"):
            w = clip(w, shape)
            yield w, np.ascontiguousarray(labels[w.to_slices()])

    _write_cog(blocks, shape, scene, out)
    return {"tiles": None}


WAYS = {"io-floor": way_io_floor, "tilewise": way_tilewise, "monai": way_monai}


def child(way: str, scene: Path, workdir: Path) -> None:
    from _common import TreeMemorySampler

    out = workdir / f"mask_{way}.tif"
    out.unlink(missing_ok=True)
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    with TreeMemorySampler() as mem:
        extra = WAYS[way](scene, out)
        cpu = _cpu_seconds() - cpu0  # before Ray's processes go away
    seconds = time.perf_counter() - t0
    for written in workdir.glob(f"{out.stem}.*"):  # the mask and its .qml and STAC .json sidecars
        written.unlink()
    print(json.dumps({"way": way, "seconds": seconds, "cpu": cpu, "peak_total": mem.peak_total, **extra}), flush=True)
    # Measured; now stop Ray for good. Leaving it to the OS (os._exit) left Ray's dashboard and
    # runtime-env agents running for a minute or more, taking CPU from the next way's run.
    from pipeline.ray_env import shutdown

    shutdown()  # the Ray that tilewise's way started; nothing where no Ray ran


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tilewise-bench")
    ap.add_argument("--child", choices=sorted(WAYS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    from _common import cpu_name, make_large_scene

    scene = make_large_scene(args.workdir / f"rgb_{args.size}.tif", args.size, bands=3)
    if args.child:
        child(args.child, scene, args.workdir)
        return
    from models import cpu_has_native_bf16

    mp = args.size * args.size / 1e6
    print(f"scene {args.size}^2 RGB uint8 ({mp:.0f} MP), 1x1-conv model in fp32, tile {TILE}, overlap {OVERLAP}, "
          f"gaussian, 2 CPUs; CPU native bf16: {cpu_has_native_bf16()}")  # fmt: skip
    print(f"machine: {cpu_name()}; load average before the run: {os.getloadavg()[0]:.1f}")
    rows: dict[tuple[str, int], dict] = {}
    small = args.size // 2
    for size in (args.size, small):  # the half-size runs give the cost per pixel once start-up cancels out
        for way in WAYS:
            rows[way, size] = row = _run_child(way, size, args.workdir)
            if size != args.size:
                continue
            first = f", first tiles stitched after {row['first_tiles_s']:.1f} s" if row.get("first_tiles_s") else ""
            print(
                f"{way:>9}: {row['seconds']:6.1f} s  {mp / row['seconds']:6.2f} MP/s  "
                f"{row['cpu'] / mp:.3f} core-s/MP  peak {row['peak_total'] / 2**30:.2f} GiB{first}",
                flush=True,
            )
    # Steady state: what one more megapixel costs, from the difference between the two sizes.
    # Start-up (imports, Ray and its daemons, the model actor) is paid once per run and cancels.
    extra_mp = mp - small * small / 1e6
    steady = {}
    for way in WAYS:
        big, half = rows[way, args.size], rows[way, small]
        seconds, cpu = big["seconds"] - half["seconds"], big["cpu"] - half["cpu"]
        if seconds <= 0 or cpu <= 0:
            sys.exit(f"{way}: the {small}^2 run took as long as the {args.size}^2 one (a busy machine?); run again")
        steady[way] = (extra_mp / seconds, cpu / extra_mp)
        print(f"{way:>9} steady state ({args.size}^2 minus {small}^2): {steady[way][0]:6.2f} MP/s  "
              f"{steady[way][1]:.3f} core-s/MP")  # fmt: skip
    tw, floor, monai = rows["tilewise", args.size], rows["io-floor", args.size], rows["monai", args.size]
    h100 = H100_TFLOPS * 1e3 / GFLOP_PER_MP
    print(f"H100 at ResNet-101's compute limit: {h100:.0f} MP/s; at tilewise's steady {steady['tilewise'][1]:.3f} "
          f"core-s/MP that needs {h100 * steady['tilewise'][1]:.0f} CPU cores (whole run, start-up included: "
          f"{h100 * tw['cpu'] / mp:.0f})")  # fmt: skip
    print(f"tilewise/monai peak memory: {tw['peak_total'] / monai['peak_total']:.2f}")
    print(f"time to first stitched tile: {tw['first_tiles_s']:.1f} s")
    print(f"tilewise/monai throughput: {monai['seconds'] / tw['seconds']:.2f} "
          f"(steady state: {steady['tilewise'][0] / steady['monai'][0]:.2f})")  # fmt: skip
    print(f"pipeline/io-floor throughput: {floor['seconds'] / tw['seconds']:.2f} "
          f"(steady state: {steady['tilewise'][0] / steady['io-floor'][0]:.2f})")  # fmt: skip


def _run_child(way: str, size: int, workdir: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", way, "--size", str(size), "--workdir", str(workdir)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{way} at {size}^2 failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
