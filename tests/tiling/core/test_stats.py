"""Band statistics: the pairwise variance stays exact for data far from zero (issue 7)."""

from __future__ import annotations

import numpy as np

from tiling.core.stats import sample_band_stats
from tiling.core.windows import Window


class _ArraySource:
    """A float64 (bands, rows, cols) array read window by window, every pixel valid."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.shape = data.shape[1:]
        self.count = data.shape[0]

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        part = self.data[(slice(None), *window.to_slices())]
        return part, np.ones(part.shape[1:], bool)


def test_a_band_around_1e9_with_unit_spread_gets_std_1() -> None:
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((2, 600, 600))
    data = noise + np.array([1e9, 0.0])[:, None, None]
    mean, std = sample_band_stats(_ArraySource(data))
    np.testing.assert_allclose(std, [1.0, 1.0], rtol=0.02)
    assert abs(mean[0] - 1e9) < 0.1 and abs(mean[1]) < 0.1
    # the one-pass formula this replaced cancels catastrophically at this offset
    x = data[0].ravel()
    naive = np.sqrt(max(np.mean(x * x) - np.mean(x) ** 2, 0.0))
    assert abs(naive - 1.0) > 0.5
