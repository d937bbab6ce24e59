"""Per-band statistics from a bounded sample of windows, for input normalisation."""

from __future__ import annotations

import itertools
from typing import NamedTuple, Protocol

import numpy as np

from tiling.core.windows import Window

__all__ = ["BandStats", "sample_band_stats"]


class _Sampled(Protocol):
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def count(self) -> int: ...

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]: ...


class BandStats(NamedTuple):
    """Per-band mean and standard deviation, one float per band."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


def sample_band_stats(source: _Sampled, grid: int = 4, size: int = 256) -> BandStats:
    """Mean and standard deviation per band over the valid pixels of a
    lattice of ``size``-pixel windows spread over the scene: ``grid`` positions
    per image axis and, for a volume, ``grid`` single slices along axis 0.

    Reads at most ``grid**ndim`` windows whatever the scene size, so it is
    cheap on a 50 GB scene. The variance is merged window by window with
    Chan et al.'s pairwise update, which stays exact for values with a large
    offset (a one-pass ``E[x^2] - E[x]^2`` cancels there). A band with no
    spread gets std 1; a scene with no valid pixel in the sample gets mean 0,
    std 1.
    """
    shape = tuple(source.shape)
    sizes = [1 if (len(shape) == 3 and a == 0) else min(size, n) for a, n in enumerate(shape)]
    starts = [sorted({int(x) for x in np.linspace(0, n - k, grid)}) for n, k in zip(shape, sizes)]
    mean = np.zeros(source.count)
    m2 = np.zeros(source.count)  # sum of squared deviations from the running mean
    n = 0
    for start in itertools.product(*starts):
        data, valid = source.read(Window(start, tuple(sizes)))
        # (bands, pixels) in the source's dtype: a view where every pixel is valid, the common case
        px = data.reshape(len(data), -1) if valid.all() else data[:, valid]
        k = px.shape[1]
        if k == 0:
            continue
        w_mean = px.mean(axis=1, dtype=np.float64)
        dev = px - w_mean[:, None]  # float64
        w_m2 = np.einsum("ij,ij->i", dev, dev)  # no squared temporary
        delta = w_mean - mean
        total = n + k
        mean = mean + delta * (k / total)
        m2 = m2 + w_m2 + delta**2 * (n * k / total)
        n = total
    if n == 0:
        return BandStats((0.0,) * source.count, (1.0,) * source.count)
    std = np.sqrt(m2 / n)
    std[~(std >= 1e-6 * np.maximum(np.abs(mean), 1.0))] = 1.0
    return BandStats(tuple(float(x) for x in mean), tuple(float(x) for x in std))
