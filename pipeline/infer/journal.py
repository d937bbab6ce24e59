"""Resume inside a scene: a journal of the output blocks a sink has received, beside its temporary output.

Every finished block the stitcher hands the sink is also appended to
``.<mask>.<host>-<pid>-<random>.journal``: the block's window, its labels
and (with ``--save-probs``) its probabilities, compressed, each record
with its length and a CRC. The append is one ``write`` call, so a driver
killed with SIGKILL leaves whole records and at most one torn one at the end,
which a reader drops. (Power loss is not covered: there is no fsync.)

A later run adopts a killed run's journal (nobody holds its lock, see
:mod:`tiling.core.staging`): it renames it to its own temporary name,
writes the recorded blocks into the new sink (the model does not run for
them), and plans only the tiles that touch a block the journal lacks.
Tiles that touch both a recorded and a missing block are run again; their
share of the recorded block is dropped, so every output pixel is written
once. The journal goes with the sink's other temporary files when the
scene is published or aborted.

A journal is untrusted input: anyone who can write into the output folder
can leave one. Its first record names the plan it was written for
(:class:`JournalPlan`: a digest of the tile grid, the output block, the
classes and what the caller adds, a batch its input and model fingerprints
and parameters); one written for another plan is discarded with a log
line, never used. Every block record must be one output block of that
plan, and every length read from the file is bounded by what the plan
allows (a record is never inflated past its block's size). A link named
like a journal is never followed: not read, renamed into, nor truncated.

The journal sits in front of any sink, so every format resumes the same
way; what must hold is that a sink accepts its blocks in any order.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import stat
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from tiling.core import TileGrid, Window, staging
from tiling.core.windows import clip
from tiling.errors import TilingError
from tiling.formats.base import Sink, stale_temp_files, temp_name

__all__ = [
    "JOURNAL_SUFFIX",
    "BlockJournal",
    "JournalPlan",
    "JournaledSink",
    "Resume",
    "adopt_journal",
    "count_records",
]

log = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".journal"
_HEAD = struct.Struct("<III")  # header bytes, payload bytes, crc32 of both
#: Largest record header: a block's start, shape and classes take well under 200 bytes.
_MAX_HEADER = 1024


class _Untrusted(TilingError):
    """A journal that is not this plan's, or that breaks its bounds: discarded, never used."""


@dataclass(frozen=True)
class JournalPlan:
    """The plan a journal belongs to, and what its records may hold.

    Attributes:
        key: SHA-256 over the tile grid, the output block, the classes and the caller's context.
        grid: the tile plan; records are blocks of its scene.
        block: the output block (what the stitcher finishes at a time).
        classes: probability planes per record: the class count with ``--save-probs``, else 0.
    """

    key: str
    grid: TileGrid
    block: tuple[int, ...]
    classes: int

    @classmethod
    def of(
        cls, grid: TileGrid, block: Sequence[int], classes: int, save_probs: bool, context: Mapping[str, Any]
    ) -> JournalPlan:
        """The journal plan of a scene; ``context`` (JSON-able) ties it further, e.g. to the input and the model."""
        what = {
            "grid": [list(grid.shape), grid.tile, grid.overlap, str(getattr(grid.edge, "value", grid.edge)),
                     list(grid.block or ()), grid.slice_axis],
            "block": list(block), "classes": classes, "save_probs": save_probs, "context": context,
        }  # fmt: skip
        key = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()
        return cls(key, grid, tuple(int(b) for b in block), classes if save_probs else 0)

    def raw_bytes(self, shape: Sequence[int]) -> int:
        """Bytes of one block of ``shape`` decompressed: uint8 labels, then float32 probabilities."""
        return math.prod(shape) * (1 + 4 * self.classes)

    @property
    def max_payload(self) -> int:
        """The most compressed bytes a record may claim: zlib's worst case for the largest block, with room."""
        raw = self.raw_bytes(self.block)
        return raw + raw // 1000 + 1024

    def window(self, header: object) -> Window:
        """The block a record header names, if it is one output block of this plan.

        Raises:
            _Untrusted: if it is not.
        """
        if not isinstance(header, dict) or set(header) != {"start", "shape", "classes"}:
            raise _Untrusted(f"a record header is not a block's: {str(header)[:80]}")
        start, shape, classes = header["start"], header["shape"], header["classes"]
        ndim = len(self.grid.shape)
        if not all(isinstance(v, list) and len(v) == ndim for v in (start, shape)) or not all(
            type(n) is int for n in (*start, *shape)
        ):
            raise _Untrusted(f"a record names {start!r}, {shape!r}, not a block of this {ndim}-D scene")
        for s, n, b, total in zip(start, shape, self.block, self.grid.shape):
            if s < 0 or s >= total or s % b or n != min(b, total - s):
                raise _Untrusted(f"a record names the window {start} + {shape}, not an output block of this plan")
        if classes != self.classes:
            raise _Untrusted(f"a record holds {classes!r} probability planes, this plan {self.classes}")
        return Window(tuple(start), tuple(shape))

    def decode(self, window: Window, payload: bytes) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels (*window.shape) uint8 and probabilities (K, *window.shape) or None, never inflated past the block.

        Raises:
            _Untrusted: if the payload does not inflate to exactly the block's bytes.
        """
        size = self.raw_bytes(window.shape)
        inflate = zlib.decompressobj()
        try:
            raw = inflate.decompress(payload, size + 1)
        except zlib.error as e:
            raise _Untrusted(f"a record does not inflate ({e})") from None
        if len(raw) != size or not inflate.eof or inflate.unconsumed_tail or inflate.unused_data:
            raise _Untrusted(f"a record of the block at {window.start} does not inflate to its {size} bytes")
        pixels = math.prod(window.shape)
        labels = np.frombuffer(raw, np.uint8, pixels).reshape(window.shape)
        if not self.classes:
            return labels, None
        return labels, np.frombuffer(raw, np.float32, offset=pixels).reshape(self.classes, *window.shape)


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


def _frame(f: IO[bytes], max_header: int, max_payload: int) -> tuple[object, bytes] | None:
    """The next record's (header, payload); None at the end or at a torn or corrupt record.

    Raises:
        _Untrusted: if a whole record claims more bytes than allowed, or its header is not JSON.
    """
    head = f.read(_HEAD.size)
    if len(head) < _HEAD.size:
        return None
    hlen, plen, crc = _HEAD.unpack(head)
    if hlen > max_header or plen > max_payload:
        raise _Untrusted(f"a record claims {hlen} + {plen} bytes, more than a block of this plan takes")
    body = f.read(hlen + plen)
    if len(body) < hlen + plen or zlib.crc32(body) != crc:
        return None
    try:
        return json.loads(body[:hlen]), body[hlen:]
    except ValueError:
        raise _Untrusted("a record header is not JSON") from None


def _open(path: Path) -> IO[bytes]:
    """``path`` for reading, if it is a regular file and not a link.

    Raises:
        _Untrusted: if it is a link or not a regular file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise _Untrusted(f"cannot be opened as a plain file ({e.strerror or e})") from None
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise _Untrusted("is not a regular file")
    return f


def _records(path: Path, plan: JournalPlan) -> Iterator[tuple[int, Window, bytes]]:
    """(end offset, block, compressed payload) of each whole block record; stops at a torn one.

    Raises:
        _Untrusted: if the journal was written for another plan or breaks its bounds.
    """
    with _open(path) as f:
        first = _frame(f, _MAX_HEADER, plan.max_payload)
        if first is None:
            return
        if first != ({"plan": plan.key}, b""):
            raise _Untrusted("it was written for another plan (another scene, model or parameters), or not by tilewise")
        while (framed := _frame(f, _MAX_HEADER, plan.max_payload)) is not None:
            yield f.tell(), plan.window(framed[0]), framed[1]


class BlockJournal:
    """An append-only record of finished output blocks (see the module docstring).

    A new journal starts with a record naming ``plan``; a journal opened to
    go on (an adopted one) already has it.
    """

    def __init__(self, path: Path, plan: JournalPlan) -> None:
        self.path = path
        self.plan = plan
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        if os.fstat(self._fd).st_size == 0:
            self._write({"plan": plan.key}, b"")

    def _write(self, header: dict[str, Any], payload: bytes) -> None:
        head = json.dumps(header).encode()
        os.write(self._fd, _HEAD.pack(len(head), len(payload), zlib.crc32(head + payload)) + head + payload)

    def append(self, window: Window, labels: np.ndarray, probs: np.ndarray | None) -> None:
        """Record one block: labels (*window.shape) uint8, probs (K, *window.shape) or None."""
        raw = labels.astype(np.uint8, copy=False).tobytes()
        if probs is not None:
            raw += probs.astype(np.float32, copy=False).tobytes()
        header = {
            "start": list(window.start),
            "shape": list(window.shape),
            "classes": 0 if probs is None else len(probs),
        }
        self._write(header, zlib.compress(raw, 1))

    def replay(self, sink: Sink) -> int:
        """Write every recorded block into ``sink``; returns how many.

        Raises:
            TilingError: if the journal no longer holds what :func:`adopt_journal` checked (the scene fails).
        """
        n = 0
        for _, window, payload in _records(self.path, self.plan):
            labels, probs = self.plan.decode(window, payload)
            sink.write(window, labels, probs)
            n += 1
        return n

    def close(self) -> None:
        """Close the file (it stays on disk, for a later run to resume from)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def remove(self) -> None:
        """Close and delete the journal."""
        self.close()
        self.path.unlink(missing_ok=True)
        staging.release(self.path)


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


def _scan(path: Path, plan: JournalPlan) -> tuple[set[tuple[int, ...]], int]:
    """The blocks a journal holds, every payload inflated once to check it, and where its last whole record ends.

    Raises:
        _Untrusted: if the journal is not this plan's or breaks its bounds.
    """
    blocks: set[tuple[int, ...]] = set()
    end = 0
    for offset, window, payload in _records(path, plan):
        plan.decode(window, payload)
        blocks.add(window.start)
        end = offset
    return blocks, end


def _truncate(path: Path, end: int) -> None:
    """Cut a torn last record off ``path``, never through a link."""
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Untrusted("is not a regular file")
        os.ftruncate(fd, end)
    finally:
        os.close(fd)


def adopt_journal(final: Path, plan: JournalPlan) -> Resume | None:
    """Take over the journal a killed run left for the mask ``final``, if any; None when there is none.

    The journal is renamed to this process's temporary name (so the clean-up
    of stale files leaves it), a torn last record is cut off, and the tiles
    still to run are those touching a block it does not hold. Journals of
    several killed runs: the longest is kept, the others are removed. A
    journal written for another plan, or breaking its bounds, is discarded
    with a log line.
    """
    found = [p for p in stale_temp_files(final) if p.name.endswith(JOURNAL_SUFFIX)]
    if not found:
        return None
    found.sort(key=lambda p: p.lstat().st_size)
    for extra in found[:-1]:
        extra.unlink(missing_ok=True)
    mine = temp_name(final, JOURNAL_SUFFIX)
    try:
        os.replace(found[-1], mine)  # renames a link itself, never its target
        blocks, end = _scan(mine, plan)
        _truncate(mine, end)  # a torn last record goes
    except FileNotFoundError:  # another run adopted it first
        staging.release(mine)
        return None
    except _Untrusted as e:
        log.warning("%s: discarded the journal %s left by a killed run: %s", final, found[-1].name, e)
        blocks = set()
    if not blocks:
        mine.unlink(missing_ok=True)
        staging.release(mine)
        return None
    grid = plan.grid
    todo = [
        i for i in range(len(grid)) if any(k not in blocks for k in _block_keys(grid.window(i), grid.shape, plan.block))
    ]
    log.info("%s: resuming: %d output blocks recorded, %d of %d tiles to run", final, len(blocks), len(todo), len(grid))
    return Resume(mine, frozenset(blocks), np.asarray(todo, np.int64))


def count_records(path: Path) -> int:
    """How many whole blocks the journal at ``path`` holds (0 if it is missing), its plan unchecked."""
    try:
        with _open(path) as f:
            n = -1  # the first record names the plan
            while _frame(f, _MAX_HEADER, 2**31) is not None:
                n += 1
            return max(n, 0)
    except (_Untrusted, FileNotFoundError):
        return 0
