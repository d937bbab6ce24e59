"""GDAL settings every process that reads or writes rasters needs.

GDAL's block cache defaults to 5% of RAM per process and counts in peak
RSS; tilewise caps it in every process. GDAL reads the setting once, at its
first raster I/O, so it is set here, on import, in every process (Ray
workers import this before reading); a value the user exported wins.
"""

from __future__ import annotations

import os

import rasterio

__all__ = ["GDAL_CACHEMAX_MB", "first_line", "gdal_env"]

#: Block cache per process, in MB.
GDAL_CACHEMAX_MB = 64
os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHEMAX_MB))


def gdal_env() -> rasterio.Env:
    """A rasterio environment with the block cache capped (for short ``with`` blocks)."""
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHEMAX_MB)


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (GDAL's can run to several)."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
