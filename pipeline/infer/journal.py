"""Resume inside a scene: a journal of the output blocks a sink has received, beside its temporary output.

Every finished block the stitcher hands the sink is also appended to
``.<mask>.<host>-<pid>-<random>.journal``: the block's window, its labels
and (with ``--save-probs``) its probabilities, compressed, each record
with its length and a CRC. The append is one ``write`` call, so a driver
killed with SIGKILL leaves whole records and at most one torn one at the end,
which a reader drops. (Power loss is not covered: there is no fsync.)

A later run adopts a killed run's journal (its process is gone): it renames
it to its own temporary name, writes the recorded blocks into the new sink
(the model does not run for them), and plans only the tiles that touch a
block the journal lacks. Tiles that touch both a recorded and a missing
block are run again; their share of the recorded block is dropped, so every
output pixel is written once. The journal goes with the sink's other
temporary files when the scene is published or aborted.

The journal sits in front of any sink, so every format resumes the same
way; what must hold is that a sink accepts its blocks in any order.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tiling.core import TileGrid, Window
from tiling.core.windows import clip
from tiling.formats.base import Sink, stale_temp_files, temp_name

__all__ = ["JOURNAL_SUFFIX", "BlockJournal", "JournaledSink", "Resume", "adopt_journal", "count_records"]

log = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".journal"
_HEAD = struct.Struct("<III")  # header bytes, payload bytes, crc32 of both


@dataclass(frozen=True)
class Resume:
    """What a killed run left of one scene.

    Attributes:
        journal: the adopted journal (now under this process's temporary name).
        blocks: the start of every recorded block.
        todo: (n,) int64, the tiles still to run, in plan order.
    """

    journal: Path
    blocks: frozenset[tuple[int, ...]]
    todo: np.ndarray

    def skipped(self, tiles: int) -> int:
        """Tiles of a scene of ``tiles`` that this resume does not run."""
        return tiles - len(self.todo)


def _records(path: Path) -> Iterator[tuple[int, dict[str, object], bytes]]:
    """(end offset, header, compressed payload) of each whole record; stops at a torn or corrupt one."""
    with open(path, "rb") as f:
        while True:
            head = f.read(_HEAD.size)
            if len(head) < _HEAD.size:
                return
            hlen, plen, crc = _HEAD.unpack(head)
            body = f.read(hlen + plen)
            if len(body) < hlen + plen or zlib.crc32(body) != crc:
                return
            yield f.tell(), json.loads(body[:hlen]), body[hlen:]


class BlockJournal:
    """An append-only record of finished output blocks (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def append(self, window: Window, labels: np.ndarray, probs: np.ndarray | None) -> None:
        """Record one block: labels (*window.shape) uint8, probs (K, *window.shape) or None."""
        header = json.dumps(
            {"start": list(window.start), "shape": list(window.shape), "classes": 0 if probs is None else len(probs)}
        ).encode()
        raw = labels.astype(np.uint8, copy=False).tobytes()
        if probs is not None:
            raw += probs.astype(np.float32, copy=False).tobytes()
        payload = zlib.compress(raw, 1)
        os.write(self._fd, _HEAD.pack(len(header), len(payload), zlib.crc32(header + payload)) + header + payload)

    def replay(self, sink: Sink) -> int:
        """Write every recorded block into ``sink``; returns how many."""
        n = 0
        for _, header, payload in _records(self.path):
            shape = tuple(int(s) for s in header["shape"])  # type: ignore[attr-defined]
            raw = zlib.decompress(payload)
            size = int(np.prod(shape))
            labels = np.frombuffer(raw[:size], np.uint8).reshape(shape)
            classes = int(header["classes"])  # type: ignore[call-overload]
            probs = np.frombuffer(raw[size:], np.float32).reshape(classes, *shape) if classes else None
            sink.write(Window(tuple(int(s) for s in header["start"]), shape), labels, probs)  # type: ignore[attr-defined]
            n += 1
        return n

    def close(self) -> None:
        """Close the file (it stays on disk)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def remove(self) -> None:
        """Close and delete the journal."""
        self.close()
        self.path.unlink(missing_ok=True)


class JournaledSink:
    """The stitcher's writer during a journaled run: records each block, then hands it to the sink.

    Blocks the journal already held (replayed into the sink at the start)
    are dropped when the stitcher finishes them again from partial tiles.
    """

    def __init__(self, sink: Sink, journal: BlockJournal, recorded: frozenset[tuple[int, ...]]) -> None:
        self.sink = sink
        self.journal = journal
        self.recorded = recorded

    def write(self, window: Window, labels: np.ndarray, probs: np.ndarray | None) -> None:
        """Write one finished block unless the journal already gave it."""
        if tuple(window.start) in self.recorded:
            return
        self.sink.write(window, labels, probs)
        self.journal.append(window, labels, probs)


def _block_keys(window: Window, shape: Sequence[int], block: Sequence[int]) -> Iterator[tuple[int, ...]]:
    inside = clip(window, tuple(shape))
    ranges = (range(a // b, (e - 1) // b + 1) for a, e, b in zip(inside.start, inside.stop, block))
    return (tuple(k * b for k, b in zip(key, block)) for key in itertools.product(*ranges))


def adopt_journal(final: Path, grid: TileGrid, block: Sequence[int]) -> Resume | None:
    """Take over the journal a killed run left for the mask ``final``, if any; None when there is none.

    The journal is renamed to this process's temporary name (so the clean-up
    of stale files leaves it), a torn last record is cut off, and the tiles
    still to run are those touching a block it does not hold. Journals of
    several killed runs: the longest is kept, the others are removed.
    """
    found = [p for p in stale_temp_files(final) if p.name.endswith(JOURNAL_SUFFIX)]
    if not found:
        return None
    found.sort(key=lambda p: p.stat().st_size)
    for extra in found[:-1]:
        extra.unlink(missing_ok=True)
    mine = temp_name(final, JOURNAL_SUFFIX)
    os.replace(found[-1], mine)
    end, blocks = 0, set()
    for offset, header, _ in _records(mine):
        blocks.add(tuple(int(s) for s in header["start"]))  # type: ignore[attr-defined]
        end = offset
    os.truncate(mine, end)  # a torn last record goes
    if not blocks:
        mine.unlink()
        return None
    todo = [i for i in range(len(grid)) if any(k not in blocks for k in _block_keys(grid.window(i), grid.shape, block))]
    log.info("%s: resuming: %d output blocks recorded, %d of %d tiles to run", final, len(blocks), len(todo), len(grid))
    return Resume(mine, frozenset(blocks), np.asarray(todo, np.int64))


def count_records(path: Path) -> int:
    """How many whole blocks the journal at ``path`` holds (0 if it is missing)."""
    try:
        return sum(1 for _ in _records(path))
    except FileNotFoundError:
        return 0
