"""Per-band statistics from a bounded sample of windows, for input normalisation."""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

from tiling.source import Source
from tiling.windows import Window

__all__ = ["BandStats", "sample_band_stats"]


class BandStats(NamedTuple):
    """Per-band mean and standard deviation, one float per band."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


def sample_band_stats(source: Source, grid: int = 4, size: int = 256) -> BandStats:
    """Mean and standard deviation per band over the valid pixels of a
    lattice of ``size``-pixel windows spread over the scene: ``grid`` positions
    per image axis and, for a volume, ``grid`` single slices along axis 0.

    Reads at most ``grid**ndim`` windows whatever the scene size, so it is
    cheap on a 50 GB scene. A band with no spread gets std 1; a scene with no
    valid pixel in the sample gets mean 0, std 1.
    """
    shape = tuple(source.shape)
    sizes = [1 if (len(shape) == 3 and a == 0) else min(size, n) for a, n in enumerate(shape)]
    starts = [sorted({int(x) for x in np.linspace(0, n - k, grid)}) for n, k in zip(shape, sizes)]
    total = np.zeros(source.count)
    total_sq = np.zeros(source.count)
    n = 0
    for start in itertools.product(*starts):
        data, valid = source.read(Window(start, tuple(sizes)))
        px = data[:, valid].astype(np.float64)
        total += px.sum(axis=1)
        total_sq += (px**2).sum(axis=1)
        n += px.shape[1]
    if n == 0:
        return BandStats((0.0,) * source.count, (1.0,) * source.count)
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean**2, 0.0))
    std[std < 1e-6] = 1.0
    return BandStats(tuple(float(x) for x in mean), tuple(float(x) for x in std))
