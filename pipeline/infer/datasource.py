"""A Ray Data datasource that reads tiles window by window.

Ray's file-level readers make one task per file, so one 50 GB scene would be
one oversized task. Here every read task gets a run of windows from the tile
plan, so a single huge scene fans out into many small tasks under Ray Data's
backpressure, and each worker reopens the source from its picklable spec.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import numpy as np
from ray.data.block import Block, BlockAccessor, BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from tiling.core import TileLayout, Window
from tiling.formats import SourceSpec

__all__ = ["TileDatasource", "read_tiles"]

#: The layout of a 2-D image: windows pass through unchanged.
_FLAT = TileLayout()


def read_tiles(
    spec: SourceSpec, indices: Sequence[int], windows: Sequence[Window], rows: int, layout: TileLayout = _FLAT
) -> Iterator[dict[str, np.ndarray]]:
    """Read ``windows`` from the source and yield batches of ``rows`` tiles.

    Each batch holds ``index`` (n,) int64 tile numbers, ``image`` (n, C', t, t)
    in the source dtype (float32 after intensity windowing), ``valid``
    (n, t, t) bool, and ``skip`` (n,) bool for tiles without a single valid
    pixel (the model does not run on them).
    """
    with spec.open() as source:
        for start in range(0, len(windows), rows):
            idx = indices[start : start + rows]
            reads = [layout.read(source, w) for w in windows[start : start + rows]]
            valid = np.stack([v for _, v in reads])
            yield {
                "index": np.asarray(idx, np.int64),
                "image": np.stack([d for d, _ in reads]),
                "valid": valid,
                "skip": np.asarray(~valid.reshape(len(idx), -1).any(axis=1)),
            }


def _read_blocks(
    spec: SourceSpec, indices: Sequence[int], windows: Sequence[Window], rows: int, layout: TileLayout
) -> Iterator[Block]:
    for batch in read_tiles(spec, indices, windows, rows, layout):
        yield BlockAccessor.batch_to_block(batch)


class TileDatasource(Datasource):
    """Tiles of one source, split into read tasks of ``tiles_per_task`` windows.

    Args:
        spec: how to reopen the source in a worker.
        windows: the tile plan, in order.
        bands: band count (for size estimates).
        itemsize: bytes per pixel per band.
        tiles_per_task: windows per read task.
        rows_per_block: tiles per emitted block (the inference batch size).
        layout: how windows become model inputs (volumes, 2.5-D, windowing).
    """

    def __init__(
        self,
        spec: SourceSpec,
        windows: Sequence[Window],
        bands: int,
        itemsize: int,
        tiles_per_task: int,
        rows_per_block: int,
        layout: TileLayout = _FLAT,
    ) -> None:
        self.layout = layout
        self.spec = spec
        self.windows = list(windows)
        self.tile_bytes = int(np.prod(self.windows[0].shape)) * (bands * itemsize + 1)
        self.tiles_per_task = tiles_per_task
        self.rows_per_block = rows_per_block

    def get_name(self) -> str:
        """The operator's name in Ray Data's stats."""
        return "ReadTiles"

    def estimate_inmemory_data_size(self) -> int:
        """Bytes of every tile with its valid mask."""
        return self.tile_bytes * len(self.windows)

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        """One task per run of ``tiles_per_task`` windows, whatever ``parallelism`` asks."""
        tasks = []
        for start in range(0, len(self.windows), self.tiles_per_task):
            windows = self.windows[start : start + self.tiles_per_task]
            indices = list(range(start, start + len(windows)))
            meta = BlockMetadata(
                num_rows=len(windows), size_bytes=self.tile_bytes * len(windows), exec_stats=None, input_files=None
            )
            fn = partial(_read_blocks, self.spec, indices, windows, self.rows_per_block, self.layout)
            tasks.append(ReadTask(fn, meta, per_task_row_limit=per_task_row_limit))
        return tasks
