"""The tile grid of a scene: tile size, overlap, edge policy, block alignment.

2-D scenes are cut into square tiles. Volumes are cut slice by slice: along
the slice axis the tile is one voxel thick with stride 1, and the other two
axes are tiled like a 2-D scene.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import overload

import numpy as np

from tiling.core.windows import EdgeMode, Window, axis_starts, core_bounds
from tiling.errors import ConfigError
from tiling.options import lookup_option

__all__ = ["TileGrid", "Windows"]


@dataclass(frozen=True)
class TileGrid:
    """Tiles of ``tile`` pixels over a scene of ``shape`` (2-D rows, cols; or 3-D).

    The stride is ``round(tile * (1 - overlap))``. When the source stores its
    pixels in blocks (``block``), each axis' stride is rounded *down* to a
    multiple of the block size where the block is no larger than the stride,
    so windows start on block boundaries and a read touches the fewest
    blocks; rounding down only ever increases the overlap.

    For a 3-D ``shape``, ``slice_axis`` is the axis cut into one-voxel-thick
    slices (tile 1, stride 1); the other two axes get ``tile``.

    Raises:
        ConfigError: if ``tile`` is not a positive integer, ``overlap`` is
            outside ``[0, 1)``, or the shape is not 2-D or 3-D.
    """

    shape: tuple[int, ...]
    tile: int
    overlap: float = 0.25
    edge: EdgeMode | str = EdgeMode.SHIFT
    block: tuple[int, ...] | None = None
    slice_axis: int = 0
    _edge: EdgeMode = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.tile, bool) or not isinstance(self.tile, int) or self.tile <= 0:
            raise ConfigError(f"tile size must be a positive integer, got {self.tile!r}")
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap!r}")
        if len(self.shape) not in (2, 3) or min(self.shape) <= 0:
            raise ConfigError(f"scene shape must be 2 or 3 positive sizes, got {self.shape!r}")
        if len(self.shape) == 3 and self.slice_axis not in (0, 1, 2):
            raise ConfigError(f"axis must be 0, 1 or 2 for a volume, got {self.slice_axis!r}")
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "_edge", lookup_option(self.edge, EdgeMode, "edge"))

    @property
    def ndim(self) -> int:
        """Number of scene axes (2 or 3)."""
        return len(self.shape)

    @cached_property
    def tile_shape(self) -> tuple[int, ...]:
        """The window shape: ``tile`` on every axis but a volume's slice axis (1)."""
        if self.ndim == 2:
            return (self.tile, self.tile)
        return tuple(1 if a == self.slice_axis else self.tile for a in range(3))

    @cached_property
    def tile_shape_2d(self) -> tuple[int, int]:
        """The model's tile: the window shape without a volume's one-voxel slice axis."""
        return (self.tile, self.tile)

    @cached_property
    def stride(self) -> tuple[int, ...]:
        """Step between window starts along each axis."""
        base = max(1, round(self.tile * (1 - self.overlap)))
        block = self.block or (0,) * self.ndim
        return tuple(
            1 if t == 1 and self.ndim == 3 else (base // b * b if 0 < b <= base else base)
            for t, b in zip(self.tile_shape, block)
        )

    @cached_property
    def starts(self) -> tuple[list[int], ...]:
        """Window start offsets along each axis."""
        return tuple(axis_starts(n, t, s, self._edge) for n, t, s in zip(self.shape, self.tile_shape, self.stride))

    @property
    def windows(self) -> Windows:
        """Every tile window, in C order, computed on demand; a window may overrun the scene.

        The plan of a huge scene is never materialised: ``windows[i]`` is
        arithmetic on the per-axis starts.
        """
        return Windows(self)

    def window(self, index: int) -> Window:
        """Tile ``index``'s window (C order over the per-axis starts)."""
        pos = np.unravel_index(index, self.counts)
        return Window(tuple(self.starts[a][int(p)] for a, p in enumerate(pos)), self.tile_shape)

    @cached_property
    def counts(self) -> tuple[int, ...]:
        """Number of windows along each axis."""
        return tuple(len(s) for s in self.starts)

    def __len__(self) -> int:
        return int(np.prod(self.counts, dtype=np.int64))

    def tiles_per_block(self, block: Sequence[int]) -> np.ndarray:
        """For every output block of shape ``block``, how many windows touch it.

        Windows are a cartesian product of per-axis starts, so the count is
        the outer product of per-axis counts: no loop over the windows.

        Returns:
            int32 array of shape ``ceil(shape / block)`` per axis.
        """
        per_axis = []
        for n, b, t, starts in zip(self.shape, block, self.tile_shape, self.starts):
            counts = np.zeros(-(-n // b), np.int32)
            for s in starts:
                lo, hi = max(s, 0), min(s + t, n)
                if hi > lo:
                    counts[lo // b : (hi - 1) // b + 1] += 1
            per_axis.append(counts)
        out = per_axis[0]
        for c in per_axis[1:]:
            out = np.multiply.outer(out, c)
        return np.asarray(out, np.int32)

    @cached_property
    def _cores(self) -> tuple[list[tuple[int, int]], ...]:
        return tuple(core_bounds(st, t, n) for st, t, n in zip(self.starts, self.tile_shape, self.shape))

    def core(self, index: int) -> Window:
        """The scene region that window ``index`` alone owns (the ``center`` blend).

        The cores of all windows partition the scene.
        """
        pos = np.unravel_index(index, self.counts)
        bounds = [self._cores[a][int(p)] for a, p in enumerate(pos)]
        return Window(tuple(lo for lo, _ in bounds), tuple(hi - lo for lo, hi in bounds))


class Windows(Sequence[Window]):
    """The windows of a :class:`TileGrid` as a lazy sequence (indexing and slicing compute them)."""

    def __init__(self, grid: TileGrid) -> None:
        self._grid = grid

    def __len__(self) -> int:
        return len(self._grid)

    @overload
    def __getitem__(self, index: int) -> Window: ...
    @overload
    def __getitem__(self, index: slice) -> list[Window]: ...
    def __getitem__(self, index: int | slice) -> Window | list[Window]:
        if isinstance(index, slice):
            return [self._grid.window(i) for i in range(*index.indices(len(self)))]
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"tile {index} is outside the plan of {n} tiles")
        return self._grid.window(index % n)

    def __iter__(self) -> Iterator[Window]:
        for i in range(len(self)):
            yield self._grid.window(i)
