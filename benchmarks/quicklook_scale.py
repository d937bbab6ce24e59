"""Quicklook cost against scene size: a 4096² and a 32768² RGB COG with a COG mask.

Both scenes are generated once under the temp folder (``$TMPDIR/tilewise-quicklook-bench``; the 32768² one is
3 GiB of pixels; generating it takes minutes, the quicklook seconds). Each
quicklook runs in a fresh process, so its peak RSS is its own: the imports
plus what the reads and the drawing hold. The figure that matters is the
ratio between the two sizes: 64x the pixels should cost about the same,
because both are served from the COG overviews.

    .venv/bin/python benchmarks/quicklook_scale.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import make_large_scene

from tiling import GeoRef, Window
from tiling.formats.geotiff.gdal import gdal_env
from tiling.formats.geotiff.writer import CogSink

DATA = Path(tempfile.gettempdir()) / "tilewise-quicklook-bench"
ROOT = Path(__file__).resolve().parents[1]

_MEASURE = """
import json, resource, sys, time
from pipeline.products import quicklook
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
quicklook(sys.argv[1], sys.argv[2], sys.argv[3], class_names=["dark", "bright"])
print(json.dumps({"seconds": time.perf_counter() - t, "imports_mb": base / 1024,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_cog_scene(size: int) -> Path:
    """A 3-band COG (with overviews) of the smooth pattern in ``_common``."""
    cog = DATA / f"scene_{size}.cog.tif"
    if not cog.exists():
        tiled = make_large_scene(DATA / f"scene_{size}.tif", size, bands=3)
        t = time.perf_counter()
        with gdal_env():
            rasterio.shutil.copy(tiled, cog, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=512,
                                 OVERVIEWS="AUTO", BIGTIFF="YES")  # fmt: skip
        tiled.unlink()
        print(f"  generated {cog.name} in {time.perf_counter() - t:.0f} s", flush=True)
    return cog


def make_mask(scene: Path, size: int) -> Path:
    """A 2-class COG mask written through tilewise's CogSink, strip by strip."""
    mask = DATA / f"mask_{size}.tif"
    if mask.exists():
        return mask
    with rasterio.open(scene) as ds:
        georef = GeoRef(ds.crs.to_wkt(), tuple(ds.transform)[:6], None)
        sink = CogSink(mask, (size, size), georef, ["dark", "bright"])
        step = 1024
        for r in range(0, size, step):
            h = min(step, size - r)
            band = ds.read(1, window=((r, r + h), (0, size)))
            sink.write(Window((r, 0), (h, size)), (band > 128).astype(np.uint8), None)
    sink.finalize()
    return mask


def measure(scene: Path, mask: Path, out: Path) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(scene), str(mask), str(out)],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    DATA.mkdir(exist_ok=True)
    results = {}
    for size in (4096, 32768):
        print(f"{size}²: preparing", flush=True)
        scene = make_cog_scene(size)
        mask = make_mask(scene, size)
        r = measure(scene, mask, DATA / f"quicklook_{size}.png")
        results[size] = r
        print(f"{size}² RGB COG + COG mask: quicklook in {r['seconds']:.2f} s, "
              f"peak RSS {r['peak_mb']:.0f} MB (imports alone {r['imports_mb']:.0f} MB)", flush=True)  # fmt: skip
    small, big = results[4096], results[32768]
    print(f"32768²/4096² (64x the pixels): time x{big['seconds'] / small['seconds']:.2f}, "
          f"peak RSS x{big['peak_mb'] / small['peak_mb']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
