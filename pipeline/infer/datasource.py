"""A Ray Data datasource that reads the tiles of one or many scenes, window by window.

Ray's file-level readers make one task per file, so one 50 GB scene would be
one oversized task. Here every read task gets a run of windows of one scene,
sized by bytes, so a huge scene fans out into many small tasks under Ray
Data's backpressure, and many small scenes share one dataset (one model
pool). Each worker reopens its scene from a picklable spec and computes its
windows from the tile grid, so the plan is never materialised.

Every tile carries its scene's normalisation (``mean``, ``std``), so the
model actors hold no per-scene state. A scene that cannot be read does not
stop the run: its task emits one error row and stops.

Ray Data may bundle blocks of several tasks (and scenes) into one model
batch, so every block has the same columns and dtypes: images in the run's
one wire dtype, and an ``error`` column that is empty for tiles.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
from ray.data.block import Block, BlockAccessor, BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from tiling.core import TileGrid, TileLayout
from tiling.errors import TilingError
from tiling.formats import SourceSpec

__all__ = ["DEFAULT_TASK_BYTES", "SceneTiles", "TileDatasource", "read_tiles"]

log = logging.getLogger(__name__)

#: Bytes of tiles one read task produces: big enough to amortise opening the
#: source and scheduling a task, small enough to spread one scene over many.
DEFAULT_TASK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class SceneTiles:
    """What a read task needs to read tiles of one scene.

    Attributes:
        scene: the scene's number in the run.
        spec: reopens the source.
        grid: the scene's tile grid.
        layout: how windows become model inputs.
        mean: per-channel mean of the model input.
        std: per-channel standard deviation of the model input.
        tile_bytes: bytes of one tile with its valid mask (for task sizing).
    """

    scene: int
    spec: SourceSpec
    grid: TileGrid
    layout: TileLayout
    mean: tuple[float, ...]
    std: tuple[float, ...]
    tile_bytes: int
    dtype: str = "float32"  # the run's wire dtype: every scene's pixels fit it
    channels: int = 1
    todo: np.ndarray | None = None  # (n,) the tiles to read when resuming; None = all of them

    @property
    def tiles(self) -> int:
        """How many tiles are read."""
        return len(self.grid) if self.todo is None else len(self.todo)

    def error_row(self, message: str, internal: bool) -> dict[str, np.ndarray]:
        """One row that stands for this scene's failure, with the columns of a tile."""
        shape = (1, self.channels, *self.grid.tile_shape_2d)
        return {
            "scene": np.array([self.scene], np.int32),
            "index": np.array([-1], np.int64),
            "image": np.zeros(shape, self.dtype),
            "valid": np.zeros((1, *self.grid.tile_shape_2d), bool),
            "skip": np.array([True]),
            "mean": np.zeros((1, self.channels), np.float32),
            "std": np.ones((1, self.channels), np.float32),
            "error": np.array([message], dtype=object),
            "internal": np.array([internal]),
        }


def read_tiles(
    tiles: SceneTiles, start: int, stop: int, rows: int, indices: np.ndarray | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """Read tiles ``start:stop`` of a scene (or the tiles ``indices``) and yield batches of at most ``rows`` tiles.

    Each batch holds ``scene`` (n,) int32, ``index`` (n,) int64 tile numbers,
    ``image`` (n, C', t, t) in the source dtype (float32 after intensity
    windowing), ``valid`` (n, t, t) bool, ``skip`` (n,) bool for tiles
    without a single valid pixel (the model does not run on them), and
    ``mean``/``std`` (n, C') float32, ``error`` (n,) str (empty) and
    ``internal`` (n,) bool.

    A failure yields one row whose ``error`` says why (index -1, skipped)
    and ends the task: the scene fails, the run goes on.
    """
    try:
        with tiles.spec.open() as source:
            mean = np.asarray(tiles.mean, np.float32)
            std = np.asarray(tiles.std, np.float32)
            wanted = np.arange(start, stop, dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
            for first in range(0, len(wanted), rows):
                idx = wanted[first : first + rows]
                reads = [tiles.layout.read(source, tiles.grid.window(int(i))) for i in idx]
                valid = np.stack([v for _, v in reads])
                n = len(idx)
                yield {
                    "scene": np.full(n, tiles.scene, np.int32),
                    "index": idx,
                    "image": np.stack([d for d, _ in reads]).astype(tiles.dtype, copy=False),
                    "valid": valid,
                    "skip": np.asarray(~valid.reshape(n, -1).any(axis=1)),
                    "mean": np.broadcast_to(mean, (n, len(mean))).copy(),
                    "std": np.broadcast_to(std, (n, len(std))).copy(),
                    "error": np.full(n, "", dtype=object),
                    "internal": np.zeros(n, bool),
                }
    except Exception as e:  # the scene fails; other scenes go on
        internal = not isinstance(e, TilingError)
        if internal:
            log.exception("reading %s failed", tiles.spec.path)
        message = " ".join(str(e).split()) or type(e).__name__
        if internal:
            message = f"{type(e).__name__}: {message}"
        yield tiles.error_row(message, internal)


def _read_blocks(
    tiles: SceneTiles, start: int, stop: int, rows: int, indices: np.ndarray | None = None
) -> Iterator[Block]:
    for batch in read_tiles(tiles, start, stop, rows, indices):
        yield BlockAccessor.batch_to_block(batch)


class TileDatasource(Datasource):
    """Tiles of one or many scenes, split into read tasks of about ``task_bytes`` each.

    Tasks come scene by scene in plan order, so scenes finish one after
    another and only a few stitchers are open at a time.

    Args:
        scenes: the scenes, in run order.
        rows_per_block: tiles per emitted block (the inference batch size).
        task_bytes: target bytes of tiles per read task (a whole number of blocks).
    """

    def __init__(self, scenes: Sequence[SceneTiles], rows_per_block: int, task_bytes: int = DEFAULT_TASK_BYTES) -> None:
        self.scenes = list(scenes)
        self.rows_per_block = rows_per_block
        self.task_bytes = task_bytes

    def tiles_per_task(self, tiles: SceneTiles) -> int:
        """Tiles per read task for ``tiles``: ``task_bytes`` worth, in whole blocks, at least one block."""
        blocks = max(1, self.task_bytes // max(1, tiles.tile_bytes * self.rows_per_block))
        return blocks * self.rows_per_block

    def get_name(self) -> str:
        """The operator's name in Ray Data's stats."""
        return "ReadTiles"

    def estimate_inmemory_data_size(self) -> int:
        """Bytes of every tile with its valid mask."""
        return sum(t.tile_bytes * t.tiles for t in self.scenes)

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        """One task per run of windows of one scene, whatever ``parallelism`` asks."""
        tasks = []
        for tiles in self.scenes:
            step = self.tiles_per_task(tiles)
            todo, tiles = tiles.todo, replace(tiles, todo=None)  # each task carries its own tiles only
            total = tiles.tiles if todo is None else len(todo)
            for start in range(0, total, step):
                stop = min(start + step, total)
                meta = BlockMetadata(
                    num_rows=stop - start, size_bytes=tiles.tile_bytes * (stop - start), exec_stats=None,
                    input_files=None,
                )  # fmt: skip
                chunk = None if todo is None else todo[start:stop]
                fn = partial(_read_blocks, tiles, start, stop, self.rows_per_block, chunk)
                tasks.append(ReadTask(fn, meta, per_task_row_limit=per_task_row_limit))
        return tasks
