"""Temporary files and folders: how tilewise names them, and how it tells a dead run's leftovers from live work.

Every temporary is named ``<prefix><host>-<pid>-<random><suffix>`` (``.mask.tif.node1-4242-1a2b3c4d.part.tif``,
``tilewise-spill-node1-4242-5e6f7a8b``). The host and process id are for
people reading a folder; they decide nothing, because both lie in
containers: a restarted container has another hostname (the old one is
gone for good, so its leftovers would be kept forever), and a fresh
container numbers its processes from 1 again (a dead run's pid is alive
in someone else, so its leftovers would look busy).

What decides is a lock. The process that names a temporary creates
``<prefix><host>-<pid>-<random>.lock`` beside it and holds an exclusive
advisory lock (``flock``) on it for as long as the temporary is its work;
every file or folder whose name starts with ``<prefix><host>-<pid>-<random>``
(a COG's second temporary, a Zarr store's chunks) shares that lock. The
kernel drops the lock when the process dies, however it dies, and a lock
on a shared file system (NFS, Lustre) is seen from every host. So a
leftover is stale exactly when nobody holds its lock, whatever the
hostname or pid. The lock file goes when the temporary is released
(:func:`release`): once published or removed, or at exit.

Where ``flock`` is unavailable (some FUSE and SMB mounts) no lock file is
made, and the rule falls back to the name: a leftover of this host whose
process is gone is stale; one of another host is kept, since it cannot
be told from live work.

Symbolic links are never temporaries: tilewise makes none, so an entry
that is a link is never listed, opened, adopted or removed here, whatever
its name.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import functools
import logging
import os
import re
import shutil
import socket
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "LOCK_SUFFIX",
    "collecting",
    "host",
    "release",
    "releasing",
    "remove_stale",
    "stale_entries",
    "temp_path",
]

log = logging.getLogger(__name__)

#: The suffix of the lock file beside each temporary.
LOCK_SUFFIX = ".lock"
#: errno values that mean "this file system does not lock": fall back to the name.
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS}
_TOKEN = r"(?P<host>[A-Za-z0-9]{1,32})-(?P<pid>\d+)-(?P<rand>[0-9a-f]{8})"


def host() -> str:
    """This machine's hostname reduced to letters and digits (at most 32), as temporary names carry it."""
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


@dataclass
class _Claim:
    """This process's hold on one temporary: the lock file's descriptor (-1 without locks) and the path named."""

    token: str
    lock: Path
    fd: int
    path: Path


_guard = threading.Lock()
_claims: dict[str, _Claim] = {}  # by token
_local = threading.local()


def _forget_in_child() -> None:
    """After ``fork``: the child's copies of the descriptors are closed, never unlocked or unlinked.

    The lock belongs to the open file description the parent still holds;
    ``flock(LOCK_UN)`` in the child would release the parent's lock.
    """
    global _guard
    _guard = threading.Lock()
    for claim in _claims.values():
        if claim.fd >= 0:
            try:
                os.close(claim.fd)
            except OSError:  # pragma: no cover - already closed
                pass
    _claims.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def _lock(lock: Path) -> int:
    """Create ``lock`` and hold an exclusive lock on it; its descriptor, or -1 where locks are unavailable.

    Raises:
        FileExistsError: if ``lock`` exists (the caller draws another name).
    """
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise
    except OSError as e:  # a read-only or missing folder: writing the temporary will say so
        log.debug("no lock file %s: %s", lock, e)
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        same = os.path.samestat(os.fstat(fd), os.lstat(lock))
    except OSError as e:
        os.close(fd)
        if e.errno in _NO_LOCKS:
            lock.unlink(missing_ok=True)
            log.debug("%s: this file system takes no locks; temporaries are judged by host and pid", lock.parent)
            return -1
        if isinstance(e, FileNotFoundError):  # a cleaner took it for stale in the instant before the lock
            raise FileExistsError(lock) from None
        raise
    if not same:  # pragma: no cover - replaced in that instant: draw another name
        os.close(fd)
        raise FileExistsError(lock)
    return fd


def temp_path(folder: Path, prefix: str, suffix: str) -> Path:
    """Name a temporary ``folder/<prefix><host>-<pid>-<random><suffix>`` and claim it for this process.

    Nothing is created but the lock file beside it; the caller creates the
    file or folder, then publishes or removes it and calls :func:`release`
    (a :class:`~tiling.formats.base.Sink` does so when finalised or aborted).

    Raises:
        ValueError: if ``suffix`` is the lock files' own suffix.
    """
    if suffix == LOCK_SUFFIX:
        raise ValueError(f"a temporary cannot end in {LOCK_SUFFIX}: that is its lock file")
    for _ in range(8):
        token = f"{host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        lock = folder / f"{prefix}{token}{LOCK_SUFFIX}"
        try:
            fd = _lock(lock)
        except FileExistsError:
            continue
        path = folder / f"{prefix}{token}{suffix}"
        with _guard:
            _claims[token] = _Claim(token, lock, fd, path)
        for named in getattr(_local, "stack", ()):
            named.append(path)
        return path
    raise FileExistsError(f"{folder}: could not draw a free temporary name for {prefix!r}")  # pragma: no cover


@contextmanager
def collecting() -> Iterator[list[Path]]:
    """Inside the block, every temporary this thread names is also appended to the list it yields.

    A sink uses it to know which temporaries are its own, to release them
    when it is finalised or aborted.
    """
    stack: list[list[Path]] = _local.__dict__.setdefault("stack", [])
    named: list[Path] = []
    stack.append(named)
    try:
        yield named
    finally:
        stack.pop()  # blocks nest within a thread: this block's list is the last


def release(*paths: Path) -> None:
    """Give up this process's claim on temporaries it named (published, removed, or left for a later run).

    The lock is dropped; its file goes too unless the temporary is still
    there, so that what is left is known as stale to any later run. Paths
    not claimed are ignored.
    """
    wanted = set(paths)
    with _guard:
        claims = [c for c in _claims.values() if c.path in wanted]
        for claim in claims:
            del _claims[claim.token]
    for claim in claims:
        _drop(claim)


def _drop(claim: _Claim) -> None:
    """Let go of ``claim``'s lock; its lock file goes unless something of its name is left.

    Something left (the temporary, or a file a format derived from its name,
    such as a COG's second temporary: hence a listing of the folder) keeps its
    lock file, now free, so a later run knows it for a leftover.
    """
    if claim.fd < 0:
        return
    family = claim.lock.name.removesuffix(LOCK_SUFFIX)
    try:
        left = os.path.lexists(claim.path) or any(
            n.startswith(family) and n != claim.lock.name for n in os.listdir(claim.lock.parent)
        )
    except OSError:
        left = True
    if not left:
        claim.lock.unlink(missing_ok=True)  # while still locked: nobody can judge it stale in between
    os.close(claim.fd)


@atexit.register
def _release_all() -> None:
    """At exit every claim goes: lock files of finished temporaries are removed, leftovers stay stale."""
    with _guard:
        claims = list(_claims.values())
        _claims.clear()
    for claim in claims:
        _drop(claim)


def releasing(method: Callable[..., Any], on_return: bool, on_error: bool) -> Callable[..., Any]:
    """``method`` of an object that names temporaries (a sink), recording them on the object.

    Every temporary the call names is added to the object's
    ``_temporaries``; when the call returns (``on_return``) or raises
    (``on_error``), all of them are released (:func:`release`).
    """

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        returned = False
        with collecting() as named:
            try:
                result = method(self, *args, **kwargs)
                returned = True
                return result
            finally:
                mine: list[Path] = self.__dict__.setdefault("_temporaries", [])
                mine.extend(named)
                if (on_return if returned else on_error) and mine:
                    release(*mine)
                    mine.clear()

    wrapper.releases_temporaries = True  # type: ignore[attr-defined]
    return wrapper


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _by_name(name: re.Match[str]) -> bool:
    """Without a lock to ask: stale when of this host and its process is gone (or is another, reusing our pid)."""
    pid = int(name["pid"])
    return name["host"] == host() and (pid == os.getpid() or not _alive(pid))


def _is_stale(folder: Path, prefix: str, name: re.Match[str]) -> bool:
    """Whether the temporaries of the token in ``name`` (a match of a temporary's name) belong to nobody."""
    token = f"{name['host']}-{name['pid']}-{name['rand']}"
    with _guard:
        if token in _claims:
            return False  # this process's own
    lock = folder / f"{prefix}{token}{LOCK_SUFFIX}"
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return _by_name(name)
    except OSError:  # a link, or not ours to read: cannot tell, so keep it
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # held: a live run's
    except OSError as e:
        return _by_name(name) if e.errno in _NO_LOCKS else False
    finally:
        os.close(fd)
    return True


def stale_entries(folder: Path, prefix: str) -> list[Path]:
    """Temporaries named ``<prefix><host>-<pid>-<random>...`` in ``folder`` that nobody holds, lock files last.

    Only names :func:`temp_path` makes match, and never a symbolic link, so
    nothing a user made is listed.
    """
    pattern = re.compile(rf"^{re.escape(prefix)}{_TOKEN}(?:\..*)?$")
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    families: dict[str, list[Path]] = {}
    verdict: dict[str, bool] = {}
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None or entry.is_symlink():
            continue
        key = f"{m['host']}-{m['pid']}-{m['rand']}"
        if key not in verdict:
            verdict[key] = _is_stale(folder, prefix, m)
        if verdict[key]:
            families.setdefault(key, []).append(Path(entry.path))
    stale = [p for paths in families.values() for p in paths]
    return sorted(stale, key=lambda p: (p.name.endswith(LOCK_SUFFIX), p.name))


def remove_stale(folder: Path, prefix: str) -> list[Path]:
    """Remove what :func:`stale_entries` lists (folders whole, never following a link); returns what went."""
    removed = []
    for path in stale_entries(folder, prefix):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue  # another run removed it first
        except OSError as e:
            log.warning("could not remove %s: %s", path, e)
            continue
        removed.append(path)
    return removed
