"""Band statistics: the pairwise variance stays exact for data far from zero (issue 7)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

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


class _MaskedSource(_ArraySource):
    """Like _ArraySource, with a validity mask of its own."""

    def __init__(self, data: np.ndarray, valid: np.ndarray) -> None:
        super().__init__(data)
        self.valid = valid

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        return self.data[(slice(None), *window.to_slices())], self.valid[window.to_slices()]


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 700),
    cols=st.integers(1, 700),
    dtype=st.sampled_from(["uint8", "uint16", "float32"]),
    holes=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_stats_equal_numpy_over_the_valid_pixels_of_the_sampled_windows(
    rows: int, cols: int, dtype: str, holes: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    data = (rng.random((2, rows, cols)) * 200).astype(dtype)
    valid = rng.random((rows, cols)) >= holes
    mean, std = sample_band_stats(_MaskedSource(data, valid), grid=3, size=256)
    # the reference: every sampled window's valid pixels, pooled (windows overlap on small scenes)
    starts = [sorted({int(x) for x in np.linspace(0, n - min(256, n), 3)}) for n in (rows, cols)]
    pooled = np.concatenate(
        [
            data[:, r : r + 256, c : c + 256][:, valid[r : r + 256, c : c + 256]].astype(np.float64)
            for r in starts[0]
            for c in starts[1]
        ],
        axis=1,
    )
    if pooled.shape[1] == 0:
        assert (mean, std) == ((0.0, 0.0), (1.0, 1.0))
        return
    want_std = pooled.std(axis=1)
    want_std[want_std < 1e-6 * np.maximum(np.abs(pooled.mean(axis=1)), 1.0)] = 1.0
    np.testing.assert_allclose(mean, pooled.mean(axis=1), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(std, want_std, rtol=1e-9, atol=1e-9)
