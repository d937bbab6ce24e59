"""Intensity windows: map a range of values (Hounsfield units for CT) onto [0, 1].

Radiologists read CT through a window (level and width); feeding the model
the same window gives it a fixed, scanner-independent input range. The
presets are the usual display windows, written as (low, high) HU.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import numpy as np

from tiling.errors import ConfigError
from tiling.options import lookup_option

__all__ = ["CtWindow", "apply_window", "ct_window", "window_bounds"]


class CtWindow(str, Enum):
    """Named CT intensity windows, as (low, high) HU; the value is the preset's name."""

    SOFT_TISSUE = "soft-tissue"  # level 40, width 400
    LUNG = "lung"  # level -600, width 1500
    BONE = "bone"  # level 400, width 1800
    BRAIN = "brain"  # level 40, width 80

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


_CT_WINDOWS = {
    CtWindow.SOFT_TISSUE: (-160.0, 240.0),
    CtWindow.LUNG: (-1350.0, 150.0),
    CtWindow.BONE: (-500.0, 1300.0),
    CtWindow.BRAIN: (0.0, 80.0),
}


def window_bounds(window: CtWindow | str | Sequence[float]) -> tuple[float, float]:
    """Resolve a window to (low, high).

    Args:
        window: a preset (``"soft-tissue"``, ``"lung"``, ``"bone"``,
            ``"brain"``), a ``"low,high"`` string such as ``"-160,240"``, or
            a (low, high) pair.

    Raises:
        ConfigError: if the name is unknown (with the closest preset), the
            string does not parse, or high <= low.
    """
    if isinstance(window, str) and "," in window:
        try:
            low, high = (float(v) for v in window.split(","))
        except ValueError as e:
            raise ConfigError(f"window: {window!r} is not 'low,high' in HU, e.g. '-160,240'") from e
    elif isinstance(window, (str, CtWindow)):
        low, high = _CT_WINDOWS[lookup_option(window, CtWindow, "window")]
    else:
        low, high = (float(v) for v in window)
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise ConfigError(f"window: high {high} must exceed low {low}; give it as 'low,high', e.g. '-160,240'")
    return low, high


def apply_window(data: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map values linearly from [low, high] to [0, 1], clipping outside; float32, same shape."""
    out = (np.asarray(data, np.float32) - np.float32(low)) / np.float32(high - low)
    return np.clip(out, 0.0, 1.0, out=out)


def ct_window(data: np.ndarray, window: CtWindow | str | Sequence[float]) -> np.ndarray:
    """:func:`apply_window` with a window given as a preset, a ``"low,high"`` string or a pair."""
    return apply_window(data, *window_bounds(window))
