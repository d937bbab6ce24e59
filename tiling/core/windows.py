"""Windows and tile planning.

A :class:`Window` is an N-D box in array-axis order (``start`` and ``shape``),
like :class:`rasterio.windows.Window` without float offsets and without the
column/row flip. The arithmetic lives in module functions; the methods call
them.

:func:`plan_windows` covers an array with tiles of a fixed size. Coverage is
guaranteed by shifting the last window of each axis back to the edge
(``edge="shift"``, as MONAI's ``dense_patch_slices``) or by letting it overrun
the edge and padding the read (``edge="pad"``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from tiling.errors import WindowError
from tiling.options import lookup_option

__all__ = [
    "EdgeMode",
    "Window",
    "axis_starts",
    "clip",
    "core_bounds",
    "intersection",
    "intersects",
    "plan_count",
    "plan_windows",
]


class EdgeMode(str, Enum):
    """How the last tile of an axis reaches the edge."""

    SHIFT = "shift"  # move the last window back inside the array
    PAD = "pad"  # let it overrun; the read is padded and padding gets zero weight

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


@dataclass(frozen=True, slots=True)
class Window:
    """An N-D box: ``start`` offsets and ``shape`` sizes, in array-axis order.

    Raises:
        WindowError: if start and shape differ in length, are not integers, or
            a size is not positive.
    """

    start: tuple[int, ...]
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        start = tuple(self.start)
        shape = tuple(self.shape)
        if len(start) != len(shape) or not start:
            raise WindowError(f"window start {start} and shape {shape} must have the same length")
        for v in start + shape:
            if isinstance(v, bool) or not isinstance(v, int):
                raise WindowError(f"window offsets and sizes must be integers, got {start}, {shape}")
        if any(s <= 0 for s in shape):
            raise WindowError(f"window sizes must be positive, got {shape}")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "shape", shape)

    @property
    def stop(self) -> tuple[int, ...]:
        """Exclusive end offsets."""
        return tuple(a + n for a, n in zip(self.start, self.shape))

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self.shape)

    def to_slices(self) -> tuple[slice, ...]:
        """Slices that select this window from an array."""
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))

    @classmethod
    def from_slices(cls, slices: Sequence[slice]) -> Window:
        """Build a window from slices with explicit, non-negative start and stop."""
        if any(s.start is None or s.stop is None or (s.step not in (None, 1)) for s in slices):
            raise WindowError(f"slices need explicit start and stop and no step, got {slices}")
        return cls(tuple(s.start for s in slices), tuple(s.stop - s.start for s in slices))

    def relative_to(self, outer: Window) -> Window:
        """This window expressed in the coordinates of ``outer``'s origin."""
        return Window(tuple(a - o for a, o in zip(self.start, outer.start)), self.shape)


def intersects(a: Window, b: Window) -> bool:
    """Whether two windows share at least one cell."""
    return all(max(a0, b0) < min(a1, b1) for a0, a1, b0, b1 in zip(a.start, a.stop, b.start, b.stop))


def intersection(a: Window, b: Window) -> Window:
    """The common part of two windows.

    Raises:
        WindowError: if they do not intersect.
    """
    if not intersects(a, b):
        raise WindowError(f"windows {a} and {b} do not intersect")
    start = tuple(max(x, y) for x, y in zip(a.start, b.start))
    stop = tuple(min(x, y) for x, y in zip(a.stop, b.stop))
    return Window(start, tuple(e - s for s, e in zip(start, stop)))


def clip(window: Window, shape: Sequence[int]) -> Window:
    """The part of ``window`` inside an array of ``shape``.

    Raises:
        WindowError: if the window lies entirely outside.
    """
    return intersection(window, Window((0,) * len(shape), tuple(shape)))


def plan_count(size: int, tile: int, stride: int) -> int:
    """Number of windows along one axis: ``1`` if ``size <= tile``, else
    ``ceil((size - tile) / stride) + 1``. Both edge modes give this count.
    """
    return 1 if size <= tile else math.ceil((size - tile) / stride) + 1


def axis_starts(size: int, tile: int, stride: int, edge: EdgeMode | str = EdgeMode.SHIFT) -> list[int]:
    """Window start offsets along one axis.

    With ``shift`` the last start is ``size - tile`` (never past the edge);
    with ``pad`` it is ``(n - 1) * stride`` and the window may overrun. An
    axis shorter than the tile has one window at 0 in both modes.

    Raises:
        WindowError: if size, tile or stride is not positive or stride > tile.
    """
    edge = lookup_option(edge, EdgeMode, "edge")
    if size <= 0 or tile <= 0 or stride <= 0:
        raise WindowError(f"size, tile and stride must be positive, got {size}, {tile}, {stride}")
    if stride > tile:
        raise WindowError(f"stride {stride} exceeds tile {tile}: windows would leave gaps")
    n = plan_count(size, tile, stride)
    starts = [i * stride for i in range(n)]
    if edge is EdgeMode.SHIFT and n > 1:
        starts[-1] = size - tile
    return starts


def plan_windows(
    shape: Sequence[int],
    tile: int | Sequence[int],
    stride: int | Sequence[int],
    edge: EdgeMode | str = EdgeMode.SHIFT,
) -> list[Window]:
    """Windows of size ``tile`` every ``stride`` that cover an array of ``shape``.

    Windows come in row-major (C) order. The count is the product over axes
    of :func:`plan_count`. With ``edge="shift"`` every window lies inside the
    array, except that an axis shorter than the tile keeps the full tile size
    (the read pads it); with ``edge="pad"`` the last window may overrun.
    """
    nd = len(shape)
    tiles = (tile,) * nd if isinstance(tile, int) else tuple(tile)
    strides = (stride,) * nd if isinstance(stride, int) else tuple(stride)
    per_axis = [axis_starts(s, t, st, edge) for s, t, st in zip(shape, tiles, strides)]
    return [Window(tuple(start), tiles) for start in itertools.product(*per_axis)]


def core_bounds(starts: Sequence[int], tile: int, size: int) -> list[tuple[int, int]]:
    """The part of each window along one axis that it alone owns.

    Neighbouring windows split their overlap at its midpoint, so the cores
    partition ``[0, size)``: every cell is owned by exactly one window. This
    is what the ``center`` blend keeps.
    """
    bounds = []
    for k, s in enumerate(starts):
        lo = 0 if k == 0 else (s + starts[k - 1] + tile) // 2
        hi = size if k == len(starts) - 1 else (starts[k + 1] + s + tile) // 2
        bounds.append((lo, min(hi, size)))
    return bounds
