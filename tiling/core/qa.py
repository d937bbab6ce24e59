"""Seam QA: how many tiles cover each pixel, with how much blend weight, and whether they agree.

Two things tell an analyst how far to trust a tiled mask:

- **Coverage** (geometry): the number of tile windows that contain each
  pixel, and the sum of their blend weights there. Both follow from the tile
  plan alone (tile, overlap, edge, the source's block alignment, blend), so
  :func:`coverage` recomputes them for any window of the scene, and
  :func:`coverage_blocks` for a whole scene block by block, decimated by an
  integer ``step`` (each output pixel is the mean over its ``step x step``
  cell), in memory that does not grow with the scene. Nodata pixels of the
  source are not known here: the stitcher gives them zero weight, this
  raster does not.
- **Disagreement** (predictions): :class:`Disagreement`, accumulated by the
  stitcher (:class:`tiling.core.stitch.Stitcher` with ``qa=True``) while the
  tiles arrive.

Disagreement is defined per pixel: an *overlap pixel* is a scene pixel that
two or more tiles predicted (the pixel is valid in each tile: inside the
scene, not nodata; whatever the blend weight); it *disagrees* when those
tiles' own argmax classes are not all the same. The scene's figure is
``disagreeing pixels / overlap pixels``. "Not unanimous" is the same as
"some pair of tiles differs", so it equals the pairwise definition at the
pixel level, yet it is computed against the first tile to arrive: per pixel
the stitcher keeps that tile's class (and, once a later tile differs, only
the fact), two small planes per open block, instead of every tile's class
(up to four tiles per pixel at overlap 0.25, nine at 0.5). It does not depend
on the order in which tiles arrive, so Ray's scheduling cannot change it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tiling.core.blend import BlendMode, tile_weights
from tiling.core.grid import TileGrid
from tiling.core.windows import Window, clip, intersection
from tiling.options import lookup_option

__all__ = ["QA_MAX_SIDE", "Disagreement", "TilePlan", "coverage", "coverage_blocks", "qa_step"]

#: Longest side of the coverage raster: 4096 px is a few MiB of float32 whatever the
#: scene, and still resolves the tile pattern of 512 px tiles on a 65,536 px scene (8 px per tile).
QA_MAX_SIDE = 4096
#: Full-resolution pixels per side computed at once by :func:`coverage_blocks`.
_CHUNK = 2048


@dataclass(frozen=True)
class Disagreement:
    """How often overlapping tiles predicted different classes, over one scene.

    Attributes:
        overlap_pixels: pixels predicted by two or more tiles.
        pixels: of those, pixels where the tiles' argmax classes are not all equal.
    """

    overlap_pixels: int = 0
    pixels: int = 0

    @property
    def share(self) -> float | None:
        """``pixels / overlap_pixels``; None when no pixel was predicted twice."""
        return self.pixels / self.overlap_pixels if self.overlap_pixels else None

    def __add__(self, other: Disagreement) -> Disagreement:
        return Disagreement(self.overlap_pixels + other.overlap_pixels, self.pixels + other.pixels)

    def to_dict(self) -> dict[str, int | float | None]:
        """Plain data for JSON: ``overlap_pixels``, ``pixels``, ``share``."""
        return {"overlap_pixels": self.overlap_pixels, "pixels": self.pixels, "share": self.share}


@dataclass(frozen=True)
class TilePlan:
    """What a mask records of the tile plan that made it, so its coverage can be recomputed later.

    Attributes:
        tile: tile size in pixels.
        overlap: the overlap fraction asked for.
        edge: ``shift`` or ``pad``.
        blend: ``gaussian``, ``mean`` or ``center``.
        block: the source's storage block the windows were aligned to (it
            can shorten the stride), or None.
    """

    tile: int
    overlap: float
    edge: str
    blend: str
    block: tuple[int, ...] | None = None

    def grid(self, shape: tuple[int, ...]) -> TileGrid:
        """The tile grid over a scene of ``shape`` (2-D)."""
        return TileGrid(tuple(shape), self.tile, self.overlap, self.edge, self.block)

    def to_dict(self) -> dict[str, object]:
        """Plain data for JSON and tags."""
        return {"tile": self.tile, "overlap": self.overlap, "edge": self.edge, "blend": self.blend,
                "block": list(self.block) if self.block else None}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> TilePlan:
        """The inverse of :meth:`to_dict`.

        Raises:
            KeyError, TypeError, ValueError: if ``d`` is not such a record.
        """
        block = d.get("block")
        return cls(
            int(d["tile"]), float(d["overlap"]), str(d["edge"]), str(d["blend"]),  # type: ignore[call-overload, arg-type]
            tuple(int(b) for b in block) if isinstance(block, list) else None,
        )  # fmt: skip


def _touching(starts: list[int], tile: int, lo: int, hi: int) -> list[int]:
    """Positions (indexes into ``starts``) of the windows whose span ``[s, s + tile)`` meets ``[lo, hi)``."""
    return [i for i, s in enumerate(starts) if s < hi and s + tile > lo]


def coverage(grid: TileGrid, blend: BlendMode | str, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Tiles covering each pixel of ``window`` and the sum of their blend weights there.

    Exact, by adding every window of the plan that meets ``window`` (only
    those: a few dozen for a 2048 px window of 512 px tiles), clipped to the
    scene as the stitcher clips them.

    Args:
        grid: the tile plan.
        blend: the blend mode whose weights are summed.
        window: the part of the scene, inside it.

    Returns:
        ``count`` uint16 and ``weight`` float32, both of ``window.shape``.
    """
    mode = lookup_option(blend, BlendMode, "blend")
    window = clip(window, grid.shape)
    count = np.zeros(window.shape, np.uint16)
    weight = np.zeros(window.shape, np.float32)
    per_axis = [
        _touching(starts, t, a, e) for starts, t, a, e in zip(grid.starts, grid.tile_shape, window.start, window.stop)
    ]
    for pos in itertools.product(*per_axis):
        index = int(np.ravel_multi_index(pos, grid.counts))
        tile = grid.window(index)
        part = intersection(clip(tile, grid.shape), window)
        dst = part.relative_to(window).to_slices()
        core = grid.core(index).relative_to(tile) if mode is BlendMode.CENTER else None
        count[dst] += 1
        weight[dst] += tile_weights(mode, tile.shape, core)[part.relative_to(tile).to_slices()]
    return count, weight


def qa_step(shape: tuple[int, ...], max_side: int = QA_MAX_SIDE) -> int:
    """The decimation that keeps the coverage raster's longest side within ``max_side`` pixels."""
    return max(1, math.ceil(max(shape) / max_side))


def _cell_mean(a: np.ndarray, step: int) -> np.ndarray:
    """Mean over ``step``-wide cells along every axis (the last cell may be narrower)."""
    out = a.astype(np.float64)
    for axis, n in enumerate(a.shape):
        edges = np.arange(0, n, step)
        sizes = np.diff(np.append(edges, n)).astype(np.float64)
        shape = [1] * a.ndim
        shape[axis] = len(sizes)
        out = np.add.reduceat(out, edges, axis=axis) / sizes.reshape(shape)
    return out


def coverage_blocks(
    grid: TileGrid, blend: BlendMode | str, step: int = 1
) -> Iterator[tuple[Window, np.ndarray, np.ndarray]]:
    """The coverage of a whole scene, decimated by ``step``, one block at a time.

    Yields:
        ``(window, count, weight)``: the block's window on the decimated grid
        (shape ``ceil(scene / step)``), and the mean tile count and blend
        weight over each output pixel's ``step x step`` cell, float32.
        Memory holds one block of at most about 2048 x 2048 scene pixels.
    """
    out_shape = tuple(math.ceil(n / step) for n in grid.shape)
    side = max(1, _CHUNK // step)
    for start in itertools.product(*(range(0, n, side) for n in out_shape)):
        out = Window(start, tuple(min(side, n - s) for n, s in zip(out_shape, start)))
        full = clip(Window(tuple(s * step for s in out.start), tuple(n * step for n in out.shape)), grid.shape)
        count, weight = coverage(grid, blend, full)
        yield out, _cell_mean(count, step).astype(np.float32), _cell_mean(weight, step).astype(np.float32)
