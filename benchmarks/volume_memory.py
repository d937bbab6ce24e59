"""Peak memory while segmenting a Zarr volume of more than 4 GB with a cheap model.

Generates a uint16 Zarr array (default 512 x 2048 x 2048 = 4.3 GB, chunks
1 x 512 x 512, zstd; cached under --workdir), segments it slice by slice into
an OME-Zarr mask through the whole pipeline (Ray read tasks, actor, stitcher,
sink) with a 1x1-convolution model, and prints the peak RSS of the driver,
the largest RSS of any single process, and the PSS sum over the driver and
every Ray process. The last line is `peak RSS (driver): X GB`.

    python benchmarks/volume_memory.py [--shape 512 2048 2048] [--tile 512]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def make_volume(path: Path, shape: tuple[int, int, int]) -> Path:
    """A smooth uint16 volume written slice by slice (bounded memory)."""
    import zarr

    if (path / "zarr.json").exists():
        return path
    tmp = path.with_name(path.name + ".part")
    arr = zarr.create_array(tmp, shape=shape, chunks=(1, 512, 512), dtype="uint16", overwrite=True)
    yy, xx = np.mgrid[0 : shape[1], 0 : shape[2]].astype(np.float32)
    for z in range(shape[0]):
        arr[z] = (2000 + 1000 * np.sin(yy / 61.0 + z / 17.0) * np.cos(xx / 53.0)).astype(np.uint16)
    tmp.rename(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[512, 2048, 2048])
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tilewise-bench")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    import torch
    from _common import TreeMemorySampler

    from pipeline.config import InferenceConfig, ModelConfig, PipelineConfig, RayConfig, TilingConfig
    from pipeline.infer import infer_scene

    shape = tuple(args.shape)
    volume = make_volume(args.workdir / ("volume_" + "x".join(map(str, shape)) + ".zarr"), shape)
    gb = np.prod(shape) * 2 / 1e9
    cfg = PipelineConfig(
        TilingConfig(tile=args.tile, overlap=0.25),
        ModelConfig(classes=2, precision="fp32"),
        InferenceConfig(batch=8),
        RayConfig(num_cpus=2),
    )
    with tempfile.TemporaryDirectory(dir=args.workdir) as out, TreeMemorySampler() as mem:
        result = infer_scene(volume, Path(out) / "mask.zarr", cfg, model=torch.nn.Conv2d(1, 2, 1), progress=False)
    print(f"volume {shape} uint16 = {gb:.2f} GB: {result.tiles} tiles in {result.seconds:.0f} s "
          f"({result.tiles_per_second:.1f} tiles/s), stitcher peak {result.stitch_peak_bytes / 2**20:.0f} MiB")  # fmt: skip
    print(
        f"peak PSS, all processes: {mem.peak_total / 1e9:.2f} GB; largest single process: {mem.peak_process / 1e9:.2f} GB"
    )
    print(f"peak RSS (driver): {mem.peak_driver / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
