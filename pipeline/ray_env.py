"""Start or join Ray (in the background, so planning overlaps its start-up), and tune Ray Data for tiles."""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future
from typing import Any

import ray

__all__ = ["ensure_ray", "shutdown", "start_ray", "started_here", "unwrap_user_error"]

log = logging.getLogger(__name__)

_lock = threading.Lock()
_starting: Future[None] | None = None
_started_here = False


def _init(address: str | None, num_cpus: int | None, object_store_mb: int | None) -> None:
    global _started_here
    # Ray's C++ logging catches SIGTERM to print a stack dump and then aborts the
    # process (status 134) after tilewise has cleaned up; tilewise handles SIGTERM itself.
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    kwargs: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    if address:
        log.info("joining Ray cluster at %s", address)
        ray.init(address=address, **kwargs)
    else:
        store = object_store_mb * 2**20 if object_store_mb else None
        # "local": a Ray of our own even where `ray start` or another job runs one on this machine
        # (ray.init() would join that one, and refuse num_cpus with a ValueError)
        ray.init(address="local", num_cpus=num_cpus, object_store_memory=store, **kwargs)
        _started_here = True


class _NoSigtermNotice(logging.Filter):
    """Drops Ray's notice that it set no SIGTERM handler off the main thread: tilewise's CLI sets its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


def _keeper(future: Future[None], args: tuple[Any, ...]) -> None:
    """Start Ray, then stay alive: Ray's daemons get a parent-death signal tied to the thread that started them."""
    logging.getLogger("ray._private.worker").addFilter(_NoSigtermNotice())
    # Ray 2.60 announces on every start that its local cluster uses token authentication (its
    # default, which tilewise keeps); the notice says nothing a user of tilewise must act on.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    try:
        _init(*args)
    except BaseException as e:  # handed to whoever waits for Ray
        future.set_exception(e)
        return
    future.set_result(None)
    threading.Event().wait()  # never set: the process's exit ends this daemon thread


def start_ray(address: str | None = None, num_cpus: int | None = None, object_store_mb: int | None = 512) -> None:
    """Begin starting (or joining) Ray in the background and return at once.

    The caller goes on opening sources and planning; :func:`ensure_ray`
    waits for Ray when it is needed. Does nothing if Ray is up or starting.
    """
    global _starting
    with _lock:
        if _starting is not None or ray.is_initialized():
            return
        address = address or os.environ.get("RAY_ADDRESS") or None
        _starting = Future()
        threading.Thread(
            target=_keeper, args=(_starting, (address, num_cpus, object_store_mb)), name="tilewise-ray", daemon=True
        ).start()


def ensure_ray(address: str | None = None, num_cpus: int | None = None, object_store_mb: int | None = 512) -> None:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start a local Ray; wait until it is up.

    Does nothing but the Ray Data settings if Ray is already initialised.
    """
    global _starting
    start_ray(address, num_cpus, object_store_mb)
    starting = _starting
    if starting is not None:
        try:
            starting.result()
        finally:
            with _lock:
                if _starting is starting and not ray.is_initialized():
                    _starting = None  # a failed start may be retried
    _configure_data()


def started_here() -> bool:
    """Whether this process started the Ray it uses (rather than joining a cluster or a caller's Ray)."""
    return _started_here and ray.is_initialized()


def shutdown() -> None:
    """Stop the Ray this process started, killing every actor and task of it (a stuck run included).

    A later :func:`ensure_ray` starts a fresh one. Does nothing to a joined cluster.
    """
    global _starting, _started_here
    with _lock:
        if _started_here and ray.is_initialized():
            ray.shutdown()
        _starting = None
        _started_here = False


def _configure_data() -> None:
    from ray.data import DataContext  # here: the CLI imports this module before starting Ray

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # tilewise shows one bar in tiles, with rate and ETA
    ctx.print_on_execution_start = False
    # Ray Data polls each map task's and actor's unique memory once a second for its stats, which
    # tilewise does not show; reading /proc/<pid>/smaps of a ResNet-101 actor takes 14 ms a time, and
    # on a small machine that CPU comes out of the model's: a 2048^2 run went 2% faster without it.
    ctx.memory_usage_poll_interval_s = None
    # Results arrive in plan order, so the stitcher's frontier of open blocks
    # stays one tile row wide instead of growing with reordering, and scenes
    # finish one after another.
    ctx.execution_options.preserve_order = True
    # Ray Data logs a failed task's traceback before raising it; tilewise turns
    # the raised error into one line, so the log stays quiet unless -vv asked
    # for debugging (Ray's session logs keep the full traceback either way).
    debugging = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    logging.getLogger("ray.data").setLevel(logging.WARNING if debugging else logging.CRITICAL)
    # Ray Data warns that its own bars are off; tilewise turned them off on purpose.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def unwrap_user_error(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """Find an exception of ``kinds`` inside a Ray task error chain, if any."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, kinds):
            return e
        stack.extend([getattr(e, "cause", None), e.__cause__, e.__context__])
    return None
