"""Temporary names and staleness (tiling/core/staging.py), with real processes holding and dropping locks.

A killed run's leftovers are removed whatever host or pid their name carries
(a container restarted under another hostname, or a fresh one whose process
has the dead run's pid); a live run's temporaries are never removed; a link
named like a temporary is never touched.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.infer.plan import remove_stale_temp_files
from tiling.core import staging
from tiling.core.stitch import SPILL_PREFIX, remove_stale_spill_dirs
from tiling.formats.base import stale_temp_files, temp_name

ROOT = Path(__file__).resolve().parents[3]


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def writer(folder: Path, hostname: str, end: str) -> subprocess.Popen:
    """A process that names two temporaries of ``folder/m.tif`` under ``hostname`` (a file and a
    store folder), writes them, prints their names, then ends as ``end`` says: ``"kill"`` (SIGKILL,
    as the out-of-memory killer does) or ``"wait"`` (holds them until its stdin closes, then exits)."""
    script = textwrap.dedent(f"""
        import os, signal, socket, sys
        from pathlib import Path
        socket.gethostname = lambda: {hostname!r}
        from tiling.formats.base import temp_name
        final = Path({str(folder / "m.tif")!r})
        part = temp_name(final, ".part.tif")
        part.write_bytes(b"half a mask")
        store = temp_name(final, ".part")
        store.mkdir()
        (store / "0.0").write_bytes(b"chunk")
        print(part.name, store.name, flush=True)
        if {end!r} == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        sys.stdin.read()
    """)
    return subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_a_killed_run_under_another_hostname_leaves_temporaries_that_are_removed(tmp_path) -> None:
    """The container restarted with a new hostname: its dead run's files and store are stale all the same."""
    (tmp_path / "mine.tif").write_bytes(b"the user's")
    run = writer(tmp_path, "oldcontainer7", "kill")
    part, store = run.stdout.readline().split()
    run.wait(timeout=60)
    assert part.startswith(".m.tif.oldcontainer7-") and (tmp_path / store / "0.0").exists()
    stale = [p.name for p in stale_temp_files(tmp_path / "m.tif")]
    locks = {n.removesuffix(s) + staging.LOCK_SUFFIX for n, s in ((part, ".part.tif"), (store, ".part"))}
    assert set(stale) == {part, store, *locks} and stale[-1].endswith(".lock")
    assert remove_stale_temp_files([tmp_path / "m.tif"]) == 2  # the file and the store; lock files are not counted
    assert names(tmp_path) == ["mine.tif"]


def test_a_leftover_whose_pid_is_alive_in_a_fresh_container_is_removed(tmp_path) -> None:
    """A fresh container numbers its processes anew: the dead run's pid now belongs to a live process
    (here: one the test holds, and this very process), but nobody holds the leftover's lock."""
    held = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        for pid in (held.pid, os.getpid()):
            token = f"{staging.host()}-{pid}-0badc0de"
            (tmp_path / f".m.tif.{token}.part.tif").write_bytes(b"left by a killed run")
            (tmp_path / f".m.tif.{token}.lock").touch()  # its lock file, which nobody holds any more
        assert remove_stale_temp_files([tmp_path / "m.tif"]) == 2
        assert names(tmp_path) == []
    finally:
        held.stdin.close()
        held.wait(timeout=60)


def test_a_live_runs_temporaries_are_never_removed_whatever_its_host(tmp_path) -> None:
    run = writer(tmp_path, "anothernode", "wait")
    try:
        part, store = run.stdout.readline().split()
        mine = temp_name(tmp_path / "m.tif", ".part.tif")  # this process's own, too
        mine.write_bytes(b"in progress")
        assert stale_temp_files(tmp_path / "m.tif") == []
        assert remove_stale_temp_files([tmp_path / "m.tif"]) == 0
        assert (tmp_path / part).exists() and (tmp_path / store / "0.0").exists() and mine.exists()
    finally:
        run.stdin.close()
        run.wait(timeout=60)
    # it exited leaving both behind: its locks went with it, so they are stale now (and never the live one's)
    assert {p.name for p in stale_temp_files(tmp_path / "m.tif") if not p.name.endswith(".lock")} == {part, store}
    mine.unlink()
    staging.release(mine)
    assert remove_stale_temp_files([tmp_path / "m.tif"]) == 2 and names(tmp_path) == []


def test_a_link_named_like_a_stale_temporary_is_never_listed_or_followed(tmp_path) -> None:
    victim = tmp_path / "victim.tif"
    victim.write_bytes(b"precious")
    token = f"{staging.host()}-999999-0badc0de"  # no such process, no lock
    (tmp_path / f".m.tif.{token}.part.tif").symlink_to(victim)
    (tmp_path / f".m.tif.{token}.lock").symlink_to(victim)
    assert stale_temp_files(tmp_path / "m.tif") == []
    assert remove_stale_temp_files([tmp_path / "m.tif"]) == 0
    assert victim.read_bytes() == b"precious" and len(names(tmp_path)) == 3


def test_released_temporaries_leave_no_lock_file(tmp_path) -> None:
    tmp = temp_name(tmp_path / "m.tif", ".part")
    assert names(tmp_path) == [tmp.name.removesuffix(".part") + ".lock"]
    tmp.write_text("x")
    os.replace(tmp, tmp_path / "m.tif")
    staging.release(tmp)
    assert names(tmp_path) == ["m.tif"]
    with pytest.raises(ValueError, match="lock file"):
        temp_name(tmp_path / "m.tif", ".lock")


def test_spill_folders_of_killed_runs_are_removed_and_live_ones_kept(tmp_path) -> None:
    dead = tmp_path / f"{SPILL_PREFIX}oldcontainer7-{os.getpid()}-0badc0de"  # another host, our pid, no holder
    dead.mkdir()
    (dead / "0_0.npy").write_bytes(b"spilled")
    (tmp_path / f"{dead.name}.lock").touch()
    live = staging.temp_path(tmp_path, SPILL_PREFIX, "")
    live.mkdir()
    user = tmp_path / f"{SPILL_PREFIX}notes"
    user.mkdir()
    assert remove_stale_spill_dirs(tmp_path) == [dead]
    assert sorted(names(tmp_path)) == sorted([live.name, live.name + ".lock", user.name])
    live.rmdir()
    staging.release(live)


def test_without_locks_a_leftover_is_judged_by_host_and_pid(tmp_path, monkeypatch) -> None:
    """On a file system without flock (some FUSE and SMB mounts) no lock file is made, and the name decides:
    this host's dead process is stale; another host's leftover cannot be told from live work, so it stays."""

    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(staging.fcntl, "flock", no_locks)
    mine = temp_name(tmp_path / "m.tif", ".part")
    assert names(tmp_path) == []  # no lock file where locks do not work
    dead = tmp_path / f".m.tif.{staging.host()}-999999-0badc0de.part"
    foreign = tmp_path / ".m.tif.othernode-999999-0badc0de.part"
    for p in (mine, dead, foreign):
        p.write_text("x")
    assert stale_temp_files(tmp_path / "m.tif") == [dead]
    staging.release(mine)
