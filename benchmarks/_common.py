"""Shared helpers for the benchmarks: scene generation, memory sampling, the machine's name."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import psutil
import rasterio
from affine import Affine

from tiling.formats.geotiff.gdal import gdal_env


def make_large_scene(path: Path, size: int, bands: int = 1, block: int = 512) -> Path:
    """A ``size`` x ``size`` uint8 GeoTIFF written strip by strip (bounded memory)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.tif")
    profile = dict(
        driver="GTiff", width=size, height=size, count=bands, dtype="uint8", crs="EPSG:32633",
        transform=Affine(10, 0, 500_000, 0, -10, 5_000_000), nodata=0, tiled=True,
        blockxsize=block, blockysize=block, compress="deflate", BIGTIFF="YES",
    )  # fmt: skip
    cols = np.arange(size, dtype=np.float32)
    with gdal_env(), rasterio.open(tmp, "w", **profile) as dst:
        for r in range(0, size, block):
            rows = np.arange(r, min(r + block, size), dtype=np.float32)[:, None]
            strip = (128 + 100 * np.sin(rows / 97.0) * np.cos(cols / 131.0)).astype(np.uint8)
            strip[strip == 0] = 1
            dst.write(np.broadcast_to(strip, (bands, *strip.shape)), window=((r, r + strip.shape[0]), (0, size)))
    tmp.rename(path)
    return path


class TreeMemorySampler:
    """Samples the memory of this process and all its descendants (Ray's included).

    Reports the peak of the summed PSS (proportional set size: shared pages,
    such as Ray's object store, are split between the processes that map them
    instead of being counted once per process) and this process's own peak RSS.
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.peak_total = 0
        self.peak_driver = 0
        self.peak_process = 0  # largest RSS of any single process in the tree
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                info = p.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += info.pss
            self.peak_process = max(self.peak_process, info.rss)
        self.peak_total = max(self.peak_total, total)
        self.peak_driver = max(self.peak_driver, me.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self) -> TreeMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def cpu_name() -> str:
    """The CPU's model name and core count, for the record of where a figure was measured."""
    import os
    import platform

    name = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"
