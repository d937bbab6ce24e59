"""Per-tile blending weights for stitching overlapping predictions."""

from __future__ import annotations

from enum import Enum
from functools import lru_cache

import numpy as np

from tiling.core.windows import Window

__all__ = ["BlendMode", "gaussian_weights", "tile_weights"]

#: Gaussian sigma as a fraction of the tile size (nnU-Net and MONAI use 1/8).
GAUSSIAN_SIGMA_SCALE = 0.125
#: Floor of the gaussian, relative to its peak, so every pixel of a tile keeps
#: a positive weight and scene corners covered by one tile are still defined.
GAUSSIAN_FLOOR = 1e-3


class BlendMode(str, Enum):
    """How overlapping tile predictions are combined."""

    GAUSSIAN = "gaussian"  # importance-weighted mean, centre pixels count most
    MEAN = "mean"  # plain mean of every prediction of a pixel
    CENTER = "center"  # each pixel taken from the one tile that owns it

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


@lru_cache(maxsize=8)
def gaussian_weights(shape: tuple[int, ...]) -> np.ndarray:
    """A separable gaussian over ``shape`` (any number of axes), peak 1,
    floored at :data:`GAUSSIAN_FLOOR`; an axis of size 1 is flat.
    """
    w = np.ones((), np.float64)
    for n in shape:
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2
        sigma = max(n * GAUSSIAN_SIGMA_SCALE, 1e-6)
        w = np.multiply.outer(w, np.exp(-0.5 * (x / sigma) ** 2))
    w = np.maximum(w / w.max(), GAUSSIAN_FLOOR).astype(np.float32)
    w.setflags(write=False)
    return w


@lru_cache(maxsize=8)
def _ones(shape: tuple[int, ...]) -> np.ndarray:
    """Read-only float32 ones: the mean blend's weights, shared by every tile of a shape."""
    w = np.ones(shape, np.float32)
    w.setflags(write=False)
    return w


def tile_weights(mode: BlendMode, shape: tuple[int, ...], core: Window | None = None) -> np.ndarray:
    """Weights float32 of ``shape`` for one tile (read-only for ``gaussian`` and ``mean``).

    Args:
        mode: the blend mode.
        shape: the tile's shape in pixels.
        core: for ``center``, the part of the tile (in tile coordinates) that
            the tile owns; it gets weight 1 and the rest 0.
    """
    if mode is BlendMode.GAUSSIAN:
        return gaussian_weights(tuple(shape))
    if mode is BlendMode.MEAN:
        return _ones(tuple(shape))
    if core is None:
        raise ValueError("the center blend needs the tile's core window")
    w = np.zeros(shape, np.float32)
    w[core.to_slices()] = 1.0
    return w
