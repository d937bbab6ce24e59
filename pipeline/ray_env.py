"""Start or join Ray, and tune Ray Data for tile streaming."""

from __future__ import annotations

import logging
import os
from typing import Any

import ray
from ray.data import DataContext

__all__ = ["ensure_ray", "unwrap_user_error"]

log = logging.getLogger(__name__)


def ensure_ray(address: str | None = None, num_cpus: int | None = None, object_store_mb: int | None = 512) -> None:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start a local Ray.

    Does nothing if Ray is already initialised in this process.
    """
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        if address:
            log.info("joining Ray cluster at %s", address)
            ray.init(address=address, **kwargs)
        else:
            store = object_store_mb * 2**20 if object_store_mb else None
            ray.init(num_cpus=num_cpus, object_store_memory=store, **kwargs)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # tilewise shows one bar in tiles, with rate and ETA
    ctx.print_on_execution_start = False
    # Results arrive in plan order, so the stitcher's frontier of open blocks
    # stays one tile row wide instead of growing with reordering.
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
