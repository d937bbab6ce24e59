"""Resume inside a scene: a batch killed (SIGKILL) after about half of one large scene's output blocks,
then run again, runs only the remaining tiles; the mask is byte-identical to a clean run's.

The killed run is a subprocess (its own Ray); the re-run and the clean run are too. A 1x1
convolution stands in for the network (the point is the bookkeeping, not the model).
Prints the tiles of the scene, the tiles the re-run skipped, the seconds of each run, and whether
the masks' SHA-256 match.

    python benchmarks/batch_resume.py [--size 8192] [--tile 512]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def job(archive: Path, out: Path, tile: int, delay: float) -> subprocess.Popen[str]:
    script = textwrap.dedent(f"""
        import json, torch
        from models import Normalization
        from pipeline.batch import run_batch
        from pipeline.config import InferenceConfig, ModelConfig, PipelineConfig, TilingConfig
        from tests.support.models import Slow
        torch.manual_seed(0)
        cfg = PipelineConfig(TilingConfig(tile={tile}), ModelConfig(classes=2, precision="fp32"), InferenceConfig(batch=4))
        r = run_batch([{str(archive)!r}], {str(out)!r}, cfg, model=Slow(torch.nn.Conv2d(3, 2, 1), {delay}),
                      normalization=Normalization((128.0,) * 3, (40.0,) * 3), progress=False)
        s = r.scenes[0]
        print("RESULT", json.dumps({{"status": s.status, "tiles": s.tiles, "resumed": s.resumed_tiles}}))
    """)
    return subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--tile", type=int, default=512)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from _common import make_large_scene

    from pipeline.infer.journal import count_records

    root = Path(tempfile.mkdtemp(prefix="tilewise-resume-"))
    archive, out, clean, clean_out = (root / n for n in ("archive", "out", "clean", "clean_out"))
    for d in (out, clean_out):
        d.mkdir(parents=True)
    scene = make_large_scene(archive / "big.tif", args.size, bands=3)
    make_large_scene(clean / "big.tif", args.size, bands=3)
    blocks = math.ceil(args.size / 256) ** 2  # the COG's 256 px blocks
    t0 = time.perf_counter()
    run = job(archive, out, args.tile, 0.0)
    while run.poll() is None and sum(count_records(p) for p in out.glob(".*.journal")) < blocks // 2:
        time.sleep(0.2)
    run.send_signal(signal.SIGKILL)
    run.communicate()
    killed = time.perf_counter() - t0
    journaled = sum(count_records(p) for p in out.glob(".*.journal"))
    t0 = time.perf_counter()
    again = job(archive, out, args.tile, 0.0).communicate()[0]
    resumed_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fresh = job(clean, clean_out, args.tile, 0.0).communicate()[0]
    clean_s = time.perf_counter() - t0
    result = next(line for line in again.splitlines() if line.startswith("RESULT"))
    print(f"scene {scene.name}: {args.size} x {args.size}, tile {args.tile}")
    print(f"killed after {killed:.1f} s with {journaled} of {blocks} output blocks journaled")
    print(f"re-run: {result.removeprefix('RESULT ')} in {resumed_s:.1f} s; clean run {clean_s:.1f} s")
    assert "RESULT" in fresh, fresh[-2000:]
    same = (
        hashlib.sha256((out / "big_mask.tif").read_bytes()).digest()
        == hashlib.sha256((clean_out / "big_mask.tif").read_bytes()).digest()
    )
    print(f"mask byte-identical to a clean run's: {same}")


if __name__ == "__main__":
    main()
