"""Run planned scenes through one Ray Data dataset and one model pool, stitching each as it arrives.

The dataset reads the tiles of every scene (read tasks), a pool of model
actors predicts them, and this process routes each batch to its scene's
stitcher; a scene's sink is opened when its first tiles arrive and
finalised as soon as its last tile is in. One dataset means one model pool,
whose start-up is paid once per run, not once per scene.

What cannot go on ends with one line: a scene that fails (unreadable tiles,
a full disk) is recorded and the others still finish; a model actor that
keeps dying ends the run after ``max_restarts`` restarts, naming the tiles
that were not processed; a run where no tile arrives for ``stall_timeout``
seconds ends saying where it stood. Whatever ends a run, open sinks are
aborted, so nothing half-written stays behind.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from tqdm.auto import tqdm

from pipeline.config import PipelineConfig
from pipeline.errors import USER_ERRORS
from pipeline.infer.datasource import SceneTiles, TileDatasource
from pipeline.infer.journal import JOURNAL_SUFFIX, BlockJournal, JournaledSink
from pipeline.infer.plan import ScenePlan
from pipeline.infer.predict import PredictUDF
from pipeline.ray_env import ensure_ray, shutdown, started_here
from tiling.core import Stitcher
from tiling.errors import ConfigError, TilingError
from tiling.formats.base import Sink, temp_name

__all__ = ["PipelineStalledError", "SceneFailure", "SceneOutput", "WorkerDiedError", "run_plans"]

log = logging.getLogger(__name__)


class PipelineStalledError(TilingError):
    """No tile finished within the stall timeout."""


class WorkerDiedError(TilingError):
    """The model actors kept dying (out of memory, a crash in the model or a decoder)."""


@dataclass(frozen=True)
class SceneOutput:
    """What one scene of a run produced.

    Attributes:
        published: every path the sink published, mask first.
        tiles: tiles planned.
        skipped: tiles without a valid pixel (not run through the model).
        seconds: from the start of the run until the scene's outputs were published.
        first_result_seconds: from the start of the run until the scene's first tiles were stitched.
        stitch_peak_bytes: the largest accumulator memory its stitcher held.
        stitch_spills: accumulator blocks spilled to disk.
        precision: the forward pass's precision where the model ran (what ``auto`` became).
        resumed: tiles not run because a killed run's journal held their blocks.
        model_seconds: time the model actors spent on the scene's tiles (normalising, forward
            pass, softmax), summed over actors: against ``seconds``, what the pipeline around
            the model cost.
    """

    published: tuple[Path, ...]
    tiles: int
    skipped: int
    seconds: float
    first_result_seconds: float
    stitch_peak_bytes: int
    stitch_spills: int
    precision: str = ""
    resumed: int = 0
    model_seconds: float = 0.0


@dataclass(frozen=True)
class SceneFailure:
    """Why a scene produced nothing.

    Attributes:
        error: the user error (a TilingError or ModelError), or an internal error.
        internal: whether it is a bug rather than bad input.
    """

    error: Exception
    internal: bool = False


@dataclass
class _Scene:
    """One scene's state while the run goes on: opened on its first tiles, closed when published or failed."""

    plan: ScenePlan
    blend: str
    sink: Sink | None = None
    stitcher: Stitcher | None = None
    first: float | None = None
    precision: str = ""
    model_seconds: float = 0.0
    failure: SceneFailure | None = None
    output: SceneOutput | None = None
    closed: bool = False
    journal: BlockJournal | None = None

    @property
    def resumed(self) -> int:
        """Tiles a killed run's journal spares this run."""
        return self.plan.resume.skipped(len(self.plan.grid)) if self.plan.resume is not None else 0

    def open(self) -> tuple[Sink, Stitcher]:
        """Open the scene's sink and a stitcher that finishes the sink's blocks.

        A journaled scene records each block; a resumed one first writes the
        blocks its journal holds and counts the tiles it spares as added.
        """
        sink = self.sink = self.plan.open_sink()
        writer: Any = sink
        if self.plan.journal is not None:
            resume = self.plan.resume
            path = resume.journal if resume else temp_name(self.plan.out, JOURNAL_SUFFIX)
            self.journal = BlockJournal(path, self.plan.journal)
            if resume is not None:
                self.journal.replay(sink)
            writer = JournaledSink(sink, self.journal, resume.blocks if resume else frozenset())
        self.stitcher = Stitcher(
            self.plan.grid, len(self.plan.request.class_names), self.blend, writer, sink.block,
            self.plan.request.save_probs, qa=self.plan.request.qa,
        )  # fmt: skip
        if self.plan.resume is not None:
            spared = np.ones(len(self.plan.grid), bool)
            spared[self.plan.resume.todo] = False
            for index in np.flatnonzero(spared):
                self.stitcher.add(int(index), None, None)
        self.first = time.perf_counter()
        return sink, self.stitcher

    def abort(self, keep_journal: bool = False) -> None:
        """Remove everything the scene wrote so far (but its journal, when a later run may resume it).

        Each part is cleaned up even if another one fails (a sink whose
        ``abort`` raises is logged), so a failing scene never stops the run.
        """
        self.closed = True
        parts: list[tuple[str, Callable[[], None]]] = []
        if self.sink is not None:
            parts.append(("its sink", self.sink.abort))
        if self.stitcher is not None:
            parts.append(("its stitcher", self.stitcher.discard))
        if self.journal is not None:
            parts.append(("its journal", self.journal.close if keep_journal else self.journal.remove))
        for what, clean in parts:
            try:
                clean()
            except Exception as e:
                log.error("%s: cleaning up %s failed: %s", self.plan.src, what, " ".join(str(e).split()))


def _resources(cfg: PipelineConfig, device: str) -> tuple[int, dict[str, Any], dict[str, Any], int]:
    """(actors, actor resources, read-task resources, torch threads per actor), checked against the cluster.

    Raises:
        ConfigError: if the cluster can never run one model actor and one read task.
    """
    resources = ray.cluster_resources()
    cpus = float(resources.get("CPU", 0.0))
    if device.startswith("cuda"):
        gpus = int(resources.get("GPU", 0))
        if gpus < 1:
            raise ConfigError(f"device: {device} was asked for, but the Ray cluster has no GPU; use --device cpu")
        share = cfg.inference.gpus_per_actor
        actors = cfg.inference.actors or max(1, int(gpus / share))
        if cpus < actors + 1:
            raise ConfigError(f"the Ray cluster has {cpus:g} CPUs; {actors} GPU actors and a reader need {actors + 1}")
        return actors, {"num_gpus": share, "num_cpus": 1}, {"num_cpus": 1}, 2
    actors = cfg.inference.actors or 1
    # Each actor reserves a CPU and read tasks need one beside it; on a machine
    # too small for that, both take half a CPU, so a one-CPU container still
    # runs instead of waiting forever for a CPU the actor holds.
    share = 1.0 if cpus >= actors + 1 else 0.5
    if cpus < share * (actors + 1):
        raise ConfigError(
            f"the Ray cluster has {cpus:g} CPUs; {actors} model actors and a reader need at least "
            f"{share * (actors + 1):g}; use fewer --actors or more --num-cpus"
        )
    # torch uses every core the actors share: reading is cheap next to the model.
    return actors, {"num_cpus": share}, {"num_cpus": share}, max(1, int(cpus) // actors)


def _ranges(indices: np.ndarray) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"``, at most a few runs."""
    if indices.size == 0:
        return "none"
    runs = []
    start = prev = int(indices[0])
    for i in (int(x) for x in indices[1:]):
        if i != prev + 1:
            runs.append((start, prev))
            start = i
        prev = i
    runs.append((start, prev))
    text = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs[:4])
    return text + (f" and {len(runs) - 4} more runs" if len(runs) > 4 else "")


def _pending(scenes: Sequence[_Scene]) -> str:
    """Which tiles of unfinished scenes never arrived, for messages."""
    parts = []
    for s in scenes:
        if s.output is not None or s.failure is not None:
            continue
        seen = s.stitcher.seen if s.stitcher is not None else np.zeros(len(s.plan.grid), bool)
        missing = np.flatnonzero(~seen)
        parts.append(f"{s.plan.src}: tiles {_ranges(missing)} of {len(seen)}")
    return "; ".join(parts[:3]) + ("; ..." if len(parts) > 3 else "")


def _iterate(ds: Any, q: queue.Queue[tuple[str, Any]]) -> None:
    """Producer thread: move the dataset's batches into ``q`` (blocking when it is full)."""
    try:
        # No prefetch: Ray Data runs ahead anyway, and a prefetch of one block held the first
        # tiles back until the second block was done (one model batch later, 12 s with ResNet-101 here).
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
            q.put(("batch", batch))
        q.put(("done", None))
    except BaseException as e:  # handed to the consumer, which raises it
        q.put(("error", e))


def _batches(ds: Any, stall_timeout: float, where: Any) -> Iterator[dict[str, np.ndarray]]:
    """The dataset's batches, ending the run if none arrives within ``stall_timeout`` seconds (0: never)."""
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=2)
    threading.Thread(target=_iterate, args=(ds, q), name="tilewise-batches", daemon=True).start()
    last = time.monotonic()
    while True:
        try:
            kind, item = q.get(timeout=1.0)
        except queue.Empty:
            if stall_timeout and time.monotonic() - last > stall_timeout:
                raise PipelineStalledError(
                    f"no tile finished in {stall_timeout:g} s, so the run stopped ({where()}); the model "
                    "actor may be stuck or starved of CPU or memory. Raise --stall-timeout if tiles are this slow"
                ) from None
            continue
        if kind == "done":
            return
        if kind == "error":
            raise item
        last = time.monotonic()
        yield item


def _is_actor_death(e: BaseException) -> bool:
    seen: set[int] = set()
    stack: list[BaseException | None] = [e]
    while stack:
        x = stack.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, (ray.exceptions.ActorDiedError, ray.exceptions.ActorUnavailableError)):
            return True
        if "ActorDiedError" in type(x).__name__ or "The actor died" in str(x):
            return True
        stack.extend([getattr(x, "cause", None), x.__cause__, x.__context__])
    return False


def _dataset(plans: Sequence[ScenePlan], cfg: PipelineConfig, model: torch.nn.Module | None, device: str) -> Any:
    actors, actor_args, read_args, threads = _resources(cfg, device)
    channels = plans[0].channels
    wire = np.result_type(*(p.dtype for p in plans)).name  # every scene's pixels fit it
    scenes = [
        SceneTiles(
            p.scene,
            p.spec,
            p.grid,
            p.layout,
            p.normalization.mean,
            p.normalization.std,
            p.tile_bytes,
            wire,
            channels,
            p.resume.todo if p.resume is not None else None,
        )
        for p in plans
        if len(p.todo)
    ]
    source = TileDatasource(scenes, cfg.inference.batch, cfg.inference.task_mb * 2**20)
    if any(str(p.spec.path).startswith("/vsi") for p in plans):  # readers reach object storage as this process does
        env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "GDAL_", "CPL_", "VSI_"))}
        read_args = {**read_args, "runtime_env": {"env_vars": env}}
    blocks = sum(math.ceil(s.tiles / source.tiles_per_task(s)) for s in scenes)
    restarts = cfg.inference.max_restarts
    with warnings.catch_warnings():
        # Ray 2.60 deprecates every way to bound an actor pool's restarts (ray_remote_args and
        # ray_remote_args_fn) without a replacement yet; the default is to restart forever.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        read = ray.data.read_datasource(
            source, override_num_blocks=blocks, concurrency=cfg.inference.readers, **read_args
        )
        return _map(read, cfg, model, device,
                    channels, actors, actor_args, threads, restarts)  # fmt: skip


def _map(
    ds: Any, cfg: PipelineConfig, model: torch.nn.Module | None, device: str, channels: int, actors: int,
    actor_args: dict[str, Any], threads: int, restarts: int,
) -> Any:  # fmt: skip
    return ds.map_batches(
        PredictUDF,
        fn_constructor_kwargs=dict(model=model, model_config=cfg.model, bands=channels, device=device, threads=threads),
        batch_size=cfg.inference.batch, compute=ray.data.ActorPoolStrategy(size=actors), batch_format="numpy",
        # bounded, where Ray Data's default restarts a dying actor forever
        ray_remote_args_fn=partial(dict, max_restarts=restarts, max_task_retries=restarts), **actor_args,
    )  # fmt: skip


def run_plans(
    plans: Sequence[ScenePlan],
    cfg: PipelineConfig,
    model: torch.nn.Module | None = None,
    progress: bool = True,
    on_result: Callable[[ScenePlan, SceneOutput | SceneFailure], None] | None = None,
    started: float | None = None,
) -> dict[int, SceneOutput | SceneFailure]:
    """Segment every planned scene; returns each scene's output or failure, by scene number.

    ``on_result`` is called in this process as soon as a scene is published
    or has failed (a batch records it there, so a run killed later keeps it).
    ``started`` (a ``time.perf_counter()`` value) is where the scenes'
    timings count from: the caller's start, planning included; now if None.

    Raises:
        PipelineStalledError: if no tile finishes within ``cfg.inference.stall_timeout`` seconds.
        WorkerDiedError: if the model actors die more than ``cfg.inference.max_restarts`` times.
        ConfigError: if the cluster cannot run the model and a reader.
    """
    t0 = time.perf_counter() if started is None else started
    if not plans:
        return {}
    ensure_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_mb)
    ctx = ray.data.DataContext.get_current()
    options = ctx.execution_options
    options.resource_limits = options.resource_limits.copy(object_store_memory=cfg.inference.inflight_mb * 2**20)
    # Ray Data merges what a task yields into blocks of up to 128 MiB, so a read task's tiles,
    # and the scores made of them, would reach the stitcher all at once at the task's end.
    # Blocks of about one model batch keep tiles streaming (and the stitcher's frontier small).
    classes = len(plans[0].request.class_names)
    batch_bytes = cfg.inference.batch * max(
        max(p.tile_bytes, classes * 4 * int(np.prod(p.grid.tile_shape))) for p in plans
    )
    ctx.target_max_block_size = max(2**16, batch_bytes)
    device = str(cfg.inference.device or ("cuda" if ray.cluster_resources().get("GPU") else "cpu"))
    scenes = {p.scene: _Scene(p, str(cfg.tiling.blend)) for p in plans}
    done_tiles = 0
    total = sum(len(p.todo) for p in plans)

    def where() -> str:
        return f"{done_tiles} of {total} tiles done; missing {_pending(list(scenes.values()))}"

    label = plans[0].src.name if len(plans) == 1 else f"{len(plans)} scenes"
    try:
        for s in scenes.values():
            if not len(s.plan.todo):  # a killed run's journal holds every block: publish from it
                _route_scene(s, _no_rows(), t0)
                _notify(on_result, s)
        ds = _dataset([s.plan for s in scenes.values() if len(s.plan.todo)], cfg, model, device) if total else None
        with tqdm(total=total, unit="tile", desc=label, disable=not progress, smoothing=0.1) as bar:
            for batch in _batches(ds, cfg.inference.stall_timeout, where) if ds is not None else ():
                tiles = _route(batch, scenes, t0, on_result)
                done_tiles += tiles
                bar.update(tiles)
    except BaseException as e:
        for s in scenes.values():
            if not s.closed:  # an interrupt keeps the journals, so a later run resumes inside the scene
                s.abort(keep_journal=not isinstance(e, Exception))
        if isinstance(e, PipelineStalledError) and started_here():
            shutdown()  # the stuck actors and tasks go with the Ray this run started
        if _is_actor_death(e) and not isinstance(e, TilingError):
            raise WorkerDiedError(
                f"the model actor died {cfg.inference.max_restarts + 1} times (out of memory, or a crash in the "
                f"model or a decoder), so the run stopped; not processed: {_pending(list(scenes.values()))}"
            ) from e
        raise
    for s in scenes.values():
        if s.output is None and s.failure is None:
            missing = int((~s.stitcher.seen).sum()) if s.stitcher is not None else len(s.plan.grid)
            s.abort()
            s.failure = SceneFailure(TilingError(f"{s.plan.src}: {missing} tiles never arrived; nothing was written"))
            _notify(on_result, s)
    return {n: (s.output if s.output is not None else s.failure) for n, s in scenes.items()}  # type: ignore[misc]


def _route(
    batch: dict[str, np.ndarray],
    scenes: dict[int, _Scene],
    t0: float,
    on_result: Callable[[ScenePlan, SceneOutput | SceneFailure], None] | None = None,
) -> int:
    """Hand each scene its rows of a batch (a batch may span scenes); returns the tiles it held."""
    order = batch["scene"]
    tiles = 0
    numbers = dict.fromkeys(int(x) for x in order)  # scenes in order of appearance
    for number in numbers:
        scene = scenes[number]
        settled = scene.output is not None or scene.failure is not None
        # most batches hold one scene: hand it the batch itself rather than a copy of every column
        rows = batch if len(numbers) == 1 else {k: v[order == number] for k, v in batch.items()}
        tiles += _route_scene(scene, rows, t0)
        if not settled:
            _notify(on_result, scene)
    return tiles


def _no_rows() -> dict[str, np.ndarray]:
    """The rows of no tile: what a scene whose every block was resumed receives.

    Every column ``_route_scene`` reads before it looks at the tiles is there, empty.
    """
    return {
        "index": np.zeros(0, np.int64), "error": np.zeros(0, object), "internal": np.zeros(0, bool),
        "precision": np.zeros(0, object), "model_seconds": np.zeros(0),
    }  # fmt: skip


def _route_scene(scene: _Scene, rows: dict[str, np.ndarray], t0: float) -> int:
    errors = np.flatnonzero(rows["error"] != "")
    if errors.size:
        if scene.failure is None and scene.output is None:
            scene.abort()
            first = int(errors[0])
            scene.failure = SceneFailure(TilingError(str(rows["error"][first])), bool(rows["internal"][first]))
        keep = rows["error"] == ""
        rows = {k: v[keep] for k, v in rows.items()}
    if scene.failure is not None or (not len(rows["index"]) and len(scene.plan.todo)):
        return len(rows["index"])  # tiles of a scene that already failed
    try:
        if scene.sink is None or scene.stitcher is None:
            sink, stitcher = scene.open()
        else:
            sink, stitcher = scene.sink, scene.stitcher
        if not scene.precision and len(rows["precision"]):
            scene.precision = str(rows["precision"][0])
        scene.model_seconds += float(rows["model_seconds"].sum())
        if len(rows["index"]):
            scores, valid = scene.plan.layout.restore(rows["scores"], rows["valid"])
            for i, index in enumerate(rows["index"]):
                stitcher.add(int(index), None if rows["skip"][i] else scores[i], valid[i])
        if stitcher.done:
            stitcher.close()
            if stitcher.qa:  # seam QA: the disagreement goes with the mask
                sink.record_qa(stitcher.disagreement)
            published = sink.finalize()
            now = time.perf_counter()
            scene.output = SceneOutput(
                published, len(scene.plan.grid), stitcher.skipped - scene.resumed, now - t0,
                (scene.first or now) - t0, stitcher.peak_open_bytes, stitcher.spills, scene.precision, scene.resumed,
                scene.model_seconds,
            )  # fmt: skip
            scene.closed = True
            if scene.journal is not None:
                scene.journal.remove()
    except Exception as e:  # this scene fails (a bug, in tilewise or a format plugin, is marked internal)
        scene.abort()
        scene.failure = SceneFailure(e, internal=not isinstance(e, USER_ERRORS))
    return len(rows["index"])


def _notify(
    on_result: Callable[[ScenePlan, SceneOutput | SceneFailure], None] | None,
    scene: _Scene,
) -> None:
    """Tell the caller that ``scene`` is published or failed; the caller's error is logged, never the run's end."""
    result = scene.output if scene.output is not None else scene.failure
    if on_result is None or result is None:
        return
    try:
        on_result(scene.plan, result)
    except Exception as e:
        log.error("%s: recording its result failed: %s", scene.plan.src, " ".join(str(e).split()) or type(e).__name__)
