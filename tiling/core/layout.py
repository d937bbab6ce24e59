"""How a source window becomes a 2-D model input, and how the model's answer goes back.

2-D images pass through unchanged. Volumes are cut into windows one voxel
thick along ``slice_axis``; the model sees 2-D tiles, so that axis is
squeezed away on the way in (optionally with its neighbours as extra
channels: 2.5-D) and restored on the way out. Both directions live here so
the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tiling.core.intensity import apply_window
from tiling.core.windows import Window

__all__ = ["Readable", "TileLayout"]


class Readable(Protocol):
    """Anything with ``read(window) -> (data (C, *window.shape), valid (*window.shape))``."""

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read one window."""
        ...


@dataclass(frozen=True)
class TileLayout:
    """How windows of a source map to model inputs.

    Attributes:
        slice_axis: for a volume, the axis its one-voxel-thick windows are
            thin along (squeezed away); None for a 2-D image.
        context: slices fed as channels (1, or 3 for 2.5-D: the slice and its
            two neighbours along ``slice_axis``).
        intensity: ``(low, high)`` to window intensities into [0, 1] (CT), or None.
    """

    slice_axis: int | None = None
    context: int = 1
    intensity: tuple[float, float] | None = None

    def channels(self, bands: int) -> int:
        """Model input channels for a source of ``bands`` bands."""
        return bands * self.context

    def read(self, source: Readable, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read one tile as ``(image (C', t, t), valid (t, t))`` for the model.

        ``C'`` is ``bands * context``; with an intensity window the image is
        float32 in [0, 1], else in the source's dtype.
        """
        axis = self.slice_axis
        if axis is None:
            data, valid = source.read(window)
        else:
            half = self.context // 2
            start, shape = list(window.start), list(window.shape)
            start[axis] -= half
            shape[axis] += 2 * half
            data, valid = source.read(Window(tuple(start), tuple(shape)))
            # (C, ..., context, ...) -> (C * context, t, t); valid of the centre slice
            data = np.moveaxis(data, axis + 1, 1).reshape(-1, *np.delete(data.shape[1:], axis))
            valid = np.take(valid, half, axis=axis)
        if self.intensity is not None:
            data = apply_window(data, *self.intensity)
        return data, valid

    def restore(self, scores: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Give a batch of 2-D results back the thin axis of their windows.

        Args:
            scores: (n, K, t, t) class scores.
            valid: (n, t, t) bool.

        Returns:
            scores (n, K, *window.shape) and valid (n, *window.shape).
        """
        if self.slice_axis is None:
            return scores, valid
        return np.expand_dims(scores, self.slice_axis + 2), np.expand_dims(valid, self.slice_axis + 1)
