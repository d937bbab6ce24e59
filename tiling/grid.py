"""The tile grid of a 2-D scene: tile size, overlap, edge policy, block alignment."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from tiling.errors import ConfigError
from tiling.options import lookup_option
from tiling.windows import EdgeMode, Window, axis_starts, core_bounds

__all__ = ["TileGrid"]


@dataclass(frozen=True)
class TileGrid:
    """Square tiles of ``tile`` pixels over a scene of ``shape`` (rows, cols).

    The stride is ``round(tile * (1 - overlap))``. When the source stores its
    pixels in blocks (``block``), each axis' stride is rounded *down* to a
    multiple of the block size where the block is no larger than the stride,
    so windows start on block boundaries and a read touches the fewest
    blocks; rounding down only ever increases the overlap.

    Raises:
        ConfigError: if ``tile`` is not a positive integer or ``overlap`` is
            outside ``[0, 1)``.
    """

    shape: tuple[int, int]
    tile: int
    overlap: float = 0.25
    edge: EdgeMode | str = EdgeMode.SHIFT
    block: tuple[int, int] | None = None
    _edge: EdgeMode = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.tile, bool) or not isinstance(self.tile, int) or self.tile <= 0:
            raise ConfigError(f"tile size must be a positive integer, got {self.tile!r}")
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap!r}")
        if len(self.shape) != 2 or min(self.shape) <= 0:
            raise ConfigError(f"scene shape must be two positive sizes, got {self.shape!r}")
        object.__setattr__(self, "_edge", lookup_option(self.edge, EdgeMode, "edge"))

    @cached_property
    def stride(self) -> tuple[int, int]:
        """Step between window starts along (rows, cols)."""
        base = max(1, round(self.tile * (1 - self.overlap)))
        if self.block is None:
            return (base, base)
        return tuple(base // b * b if 0 < b <= base else base for b in self.block)  # type: ignore[return-value]

    @cached_property
    def starts(self) -> tuple[list[int], list[int]]:
        """Window start offsets along rows and along cols."""
        return tuple(  # type: ignore[return-value]
            axis_starts(n, self.tile, s, self._edge) for n, s in zip(self.shape, self.stride)
        )

    @cached_property
    def windows(self) -> list[Window]:
        """Every tile window, row-major; each is ``tile`` x ``tile`` and may overrun the scene."""
        rows, cols = self.starts
        return [Window((r, c), (self.tile, self.tile)) for r in rows for c in cols]

    def __len__(self) -> int:
        return len(self.starts[0]) * len(self.starts[1])

    @cached_property
    def _cores(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        return tuple(  # type: ignore[return-value]
            core_bounds(st, self.tile, n) for st, n in zip(self.starts, self.shape)
        )

    def core(self, index: int) -> Window:
        """The scene region that window ``index`` alone owns (the ``center`` blend).

        The cores of all windows partition the scene.
        """
        ncols = len(self.starts[1])
        (r0, r1), (c0, c1) = self._cores[0][index // ncols], self._cores[1][index % ncols]
        return Window((r0, c0), (r1 - r0, c1 - c0))
