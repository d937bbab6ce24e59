"""A killed run's journal is untrusted input (issue 19, item 3): links are never followed, every length is
bounded by the plan, and a journal of another plan is discarded, never used."""

from __future__ import annotations

import json
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from pipeline.infer.journal import JOURNAL_SUFFIX, BlockJournal, JournalPlan, adopt_journal, count_records
from tiling.core import TileGrid, Window, staging

GRID = TileGrid((100, 90), 32, 0.25, "shift", (64, 64))
BLOCK = (64, 64)
HEAD = struct.Struct("<III")


def plan(**context: object) -> JournalPlan:
    return JournalPlan.of(GRID, BLOCK, 2, save_probs=False, context={"model": "m", **context})


def killed_runs_journal(out: Path) -> Path:
    """Where a run killed on this host (its process gone, its lock never taken) left its journal."""
    return out.with_name(f".{out.name}.{staging.host()}-999999-0badc0de{JOURNAL_SUFFIX}")


def record(header: dict, payload: bytes) -> bytes:
    head = json.dumps(header).encode()
    return HEAD.pack(len(head), len(payload), zlib.crc32(head + payload)) + head + payload


def test_a_journal_of_this_plan_is_adopted_and_its_torn_tail_cut(tmp_path) -> None:
    out = tmp_path / "m.tif"
    path = killed_runs_journal(out)
    journal = BlockJournal(path, plan())
    journal.append(Window((0, 0), (64, 64)), np.ones((64, 64), np.uint8), None)
    journal.append(Window((64, 0), (36, 64)), np.ones((36, 64), np.uint8), None)
    journal.close()
    whole = path.stat().st_size
    with open(path, "ab") as f:
        f.write(record({"start": [0, 64], "shape": [64, 26], "classes": 0}, b"torn")[:-2])
    resume = adopt_journal(out, plan())
    assert resume is not None and resume.blocks == {(0, 0), (64, 0)} and resume.journal.stat().st_size == whole
    assert count_records(resume.journal) == 2
    resume.journal.unlink()
    staging.release(resume.journal)


def test_a_link_named_like_a_stale_journal_is_never_followed(tmp_path) -> None:
    victim = tmp_path / "victim.tif"
    victim.write_bytes(b"precious" * 1000)
    out = tmp_path / "m.tif"
    killed_runs_journal(out).symlink_to(victim)
    assert adopt_journal(out, plan()) is None
    assert victim.read_bytes() == b"precious" * 1000, "the link's target is untouched (it was truncated to 0 bytes)"
    assert killed_runs_journal(out).is_symlink()


def test_a_journal_of_another_plan_is_discarded_with_a_log_line(tmp_path, caplog) -> None:
    out = tmp_path / "m.tif"
    journal = BlockJournal(killed_runs_journal(out), plan(model="another"))
    for r, c in ((0, 0), (0, 64), (64, 0), (64, 64)):
        shape = (min(64, 100 - r), min(64, 90 - c))
        journal.append(Window((r, c), shape), np.ones(shape, np.uint8), None)
    journal.close()
    with caplog.at_level(logging.WARNING, logger="pipeline.infer.journal"):
        assert adopt_journal(out, plan()) is None
    assert "another plan" in caplog.text and sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("header", "raw", "why"),
    [
        # 1 MiB of zeros that inflates to 1 GiB would do the same: it is never inflated past the block
        ({"start": [0, 0], "shape": [64, 64], "classes": 0}, bytes(64 * 64 * 1024), "does not inflate to its"),
        ({"start": [0, 0], "shape": [64, 64], "classes": 0}, bytes(100), "does not inflate to its"),
        ({"start": [32, 0], "shape": [64, 64], "classes": 0}, bytes(64 * 64), "not an output block of this plan"),
        ({"start": [0, 0], "shape": [4096, 4096], "classes": 0}, bytes(64 * 64), "not an output block"),
        ({"start": [0, 0], "shape": [64, 64], "classes": 3}, bytes(64 * 64 * 13), "probability planes"),
        ({"start": [0, 0, 0], "shape": [1, 64, 64], "classes": 0}, bytes(64 * 64), "not a block of this 2-D scene"),
        ({"start": [0, 0], "shape": [64, 64], "classes": 0, "x": 1}, bytes(64 * 64), "not a block's"),
    ],
)
def test_a_record_outside_the_plans_bounds_discards_the_journal(tmp_path, caplog, header, raw, why) -> None:
    out = tmp_path / "m.tif"
    good = plan()
    journal = BlockJournal(killed_runs_journal(out), good)
    journal.append(Window((0, 64), (64, 26)), np.ones((64, 26), np.uint8), None)  # a good block first
    journal.close()
    with open(killed_runs_journal(out), "ab") as f:
        f.write(record(header, zlib.compress(raw, 9)))  # a valid CRC: forged, not torn
    with caplog.at_level(logging.WARNING, logger="pipeline.infer.journal"):
        assert adopt_journal(out, good) is None
    assert why in caplog.text and list(tmp_path.iterdir()) == []


def test_a_record_claiming_more_bytes_than_a_block_is_never_read(tmp_path, caplog) -> None:
    out = tmp_path / "m.tif"
    journal = BlockJournal(killed_runs_journal(out), plan())
    journal.close()
    with open(killed_runs_journal(out), "ab") as f:  # claims a 1 GiB payload, then ends
        f.write(HEAD.pack(40, 2**30, 0) + b"{}")
    with caplog.at_level(logging.WARNING, logger="pipeline.infer.journal"):
        assert adopt_journal(out, plan()) is None
    assert "more than a block of this plan takes" in caplog.text
