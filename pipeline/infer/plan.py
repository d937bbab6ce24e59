"""Plan a run before any work: each scene's source, tile grid, normalisation and outputs, all checked.

Everything that can be refused is refused here, before Ray starts reading:
an unreadable source, an option its format does not take, a model that does
not fit its bands, an output that is (or holds, or is held by) an input, two
scenes writing the same path, an existing output without ``--overwrite``,
and an existing path that tilewise did not write (never replaced, even with
``--overwrite``). The products made after the mask (``--vector``,
``--quicklook``) are outputs too and go through the same checks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from models import Normalization, check_bands, check_weights
from pipeline.config import PipelineConfig
from pipeline.errors import USER_ERRORS
from pipeline.infer.journal import JournalPlan, Resume
from pipeline.products.files import owns_product
from tiling.core import TileGrid, TileLayout, sample_band_stats, staging
from tiling.errors import ConfigError, SinkError
from tiling.formats import SourceSpec, get_format, open_sink, open_source, output_format, spec_of
from tiling.formats.base import Sink, SinkRequest, Source

__all__ = [
    "PLAN_THREADS",
    "ScenePlan",
    "check_model",
    "check_outputs",
    "plan_each",
    "plan_scene",
    "remove_stale_temp_files",
]

log = logging.getLogger(__name__)

#: Scenes planned at a time. Planning a scene is mostly waiting on storage (opening it, reading
#: the windows its statistics sample; GDAL releases the GIL), which dominates in object storage.
PLAN_THREADS = 8

T = TypeVar("T")


@dataclass(frozen=True)
class ScenePlan:
    """Everything a run needs for one scene, fixed before any work starts.

    Attributes:
        scene: the scene's number in the run.
        src: the source as the user gave it (named in messages).
        out: the mask's final path.
        outputs: every path the sink will publish, mask first.
        spec: reopens the source in a worker (absolute path, format, options).
        output_format: the registry name of the mask's format.
        request: what the sink is asked for (class names, probabilities...).
        grid: the tile plan.
        layout: how a window becomes a 2-D model input and back.
        channels: model input channels.
        itemsize: bytes per pixel per band of the source's dtype.
        dtype: the dtype the model input is read in (after intensity windowing).
        normalization: per-channel mean and std the model input is normalised with.
        block: the sink's output block (what the stitcher finishes at a time).
        journal: record finished blocks beside the output, in a journal tied to this plan, so a killed
            run resumes inside the scene; None for no journal.
        resume: what a killed run left of this scene (its journal and the tiles still to run), or None.
        into_source: the mask goes inside this scene's own source (a label image in an OME-Zarr
            image's ``labels`` group); the one output allowed inside an input.
        products: the paths of the products made from the mask after the run
            (polygons, a quicklook); checked like ``outputs``.
    """

    scene: int
    src: Path
    out: Path
    outputs: tuple[Path, ...]
    spec: SourceSpec
    output_format: str
    request: SinkRequest
    grid: TileGrid
    layout: TileLayout
    channels: int
    itemsize: int
    normalization: Normalization
    dtype: str = "float32"
    block: tuple[int, ...] = ()
    journal: JournalPlan | None = None
    resume: Resume | None = None
    into_source: bool = False
    products: tuple[Path, ...] = ()

    @property
    def todo(self) -> np.ndarray:
        """(n,) int64: the tiles to run, in plan order (all of them unless resuming)."""
        return self.resume.todo if self.resume is not None else np.arange(len(self.grid), dtype=np.int64)

    @property
    def tile_bytes(self) -> int:
        """Bytes of one tile read for the model, with its valid mask."""
        return int(np.prod(self.grid.tile_shape)) * (self.channels * self.itemsize + 1)

    def open_sink(self) -> Sink:
        """Open this scene's sink (reopening the source for its reference)."""
        with self.spec.open() as source:
            return open_sink(self.out, source, self.output_format, self.request)


def _layout(source: Source, cfg: PipelineConfig) -> TileLayout:
    volume = len(source.shape) == 3
    return TileLayout(cfg.tiling.axis if volume else None, cfg.tiling.context if volume else 1, cfg.input.bounds())


def _normalization(source: Source, layout: TileLayout) -> Normalization:
    """Per-channel mean/std: fixed after intensity windowing, else sampled from the scene."""
    channels = layout.channels(source.count)
    if layout.intensity is not None:  # windowed into [0, 1]
        return Normalization((0.5,) * channels, (0.25,) * channels)
    mean, std = sample_band_stats(source)
    return Normalization(tuple(np.repeat(mean, layout.context)), tuple(np.repeat(std, layout.context)))


def plan_scene(
    scene: int,
    src: str | Path,
    out: str | Path,
    cfg: PipelineConfig,
    normalization: Normalization | None = None,
    model: object | None = None,
) -> ScenePlan:
    """Open ``src``, plan its tiles and check that its sink can be opened at ``out``.

    ``model`` is the module given instead of DeepLabV3, if any (the
    outputs' provenance names it).

    The sink is opened and aborted once here, so a format that cannot hold
    this source's mask, or an unwritable folder, fails before any work;
    nothing is left behind.

    Raises:
        TilingError: for a bad source, option or output.
    """
    src, out = Path(src), Path(out)
    fmt = output_format(out, cfg.output_format)
    sink_class = fmt.sink() if fmt.sink is not None else None
    if sink_class is None:  # output_format returns writers only
        raise ConfigError(f"{out}: {fmt.title} writes no masks")
    request = cfg.sink_request(model)
    if request.qa and not sink_class.supports_qa:
        raise ConfigError(f"{out}: --qa writes its coverage raster beside a COG mask; choose a .tif --out")
    with open_source(src, **cfg.input.source_options()) as source:
        grid = TileGrid(
            source.shape, cfg.tiling.tile, cfg.tiling.overlap, cfg.tiling.edge, source.block_shape, cfg.tiling.axis
        )
        layout = _layout(source, cfg)
        probe = open_sink(out, source, fmt, request)  # refuses what this format cannot hold
        block, into_source = tuple(probe.block), probe.into_source
        probe.abort()  # leaves nothing
        return ScenePlan(
            scene=scene, src=src, out=out, outputs=sink_class.planned_outputs(out, request), spec=spec_of(source),
            output_format=fmt.name, request=request, grid=grid, layout=layout,
            channels=layout.channels(source.count), itemsize=source.dtype.itemsize,
            normalization=normalization or _normalization(source, layout),
            dtype="float32" if layout.intensity is not None else source.dtype.name, block=block,
            into_source=into_source,
        )  # fmt: skip


def plan_each(
    items: Sequence[T],
    plan: Callable[[T], ScenePlan],
    threads: int = PLAN_THREADS,
    catch: tuple[type[Exception], ...] = USER_ERRORS,
) -> Iterator[tuple[T, ScenePlan | Exception]]:
    """``(item, plan(item))`` for every item, in their order, planned ``threads`` at a time.

    An archive's first tile no longer waits for its scenes to be opened one
    after another. An error of ``catch`` (user errors,
    :data:`~pipeline.errors.USER_ERRORS`, unless told) is yielded in the
    plan's place, so the caller records it and goes on; any other error
    propagates, and the scenes not yet planned are dropped. A batch catches
    every ``Exception``: a bug planning one scene fails that scene alone.
    """

    def attempt(item: T) -> ScenePlan | Exception:
        try:
            return plan(item)
        except catch as e:
            return e

    if len(items) <= 1 or threads <= 1:
        yield from ((item, attempt(item)) for item in items)
        return
    pool = ThreadPoolExecutor(min(threads, len(items)), thread_name_prefix="tilewise-plan")
    try:
        yield from zip(items, pool.map(attempt, items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # a bug, or a caller that stopped early


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _what(plan: ScenePlan, path: Path, product: bool) -> str:
    """What ``path`` is to its scene, for messages."""
    if product:
        return "its --quicklook PNG" if path.name.endswith(".quicklook.png") else "its --vector polygons"
    return "its mask" if path == plan.out else "a file beside its mask"


def check_outputs(plans: Sequence[ScenePlan], overwrite: bool) -> None:
    """Refuse outputs that would destroy data, before any work.

    Every path a scene writes is checked: the sink's outputs and the
    products made after the run (``ScenePlan.products``).

    Raises:
        ConfigError: if an output is an input, lies inside an input folder or
            store (except a mask its sink writes into its own scene's source:
            ``ScenePlan.into_source``), holds an input; if two outputs are
            the same path; if an output exists and ``overwrite`` is off.
        SinkError: if an output exists that tilewise did not write (even with ``overwrite``).
    """
    inputs = [(p.src, Path(p.spec.path).resolve()) for p in plans]
    claimed: dict[Path, tuple[ScenePlan, str]] = {}
    for plan in plans:
        fmt = get_format(plan.output_format)
        own = Path(plan.spec.path).resolve()
        paths = [(p, False) for p in plan.outputs] + [(p, True) for p in plan.products]
        for path, product in paths:
            target = path.resolve()
            for given, source in inputs:
                if not product and plan.into_source and source == own and target != source and _inside(target, source):
                    continue  # a label image in its own image's store (its sink never touches the image)
                if _inside(target, source) or _inside(source, target):
                    relation = "is" if target == source else "is inside" if _inside(target, source) else "holds"
                    raise ConfigError(
                        f"{path}: the output {relation} the input {given}; choose an --out outside the input"
                    )
            if target in claimed:
                other, first = claimed[target]
                if other is plan:
                    raise ConfigError(
                        f"{path}: {plan.src} would write it twice, as {first} and as "
                        f"{_what(plan, path, product)}; choose another path"
                    )
                raise ConfigError(
                    f"{path}: both {other.src} and {plan.src} would write this path; "
                    "give the sources distinct names or segment them into different --out folders"
                )
            claimed[target] = (plan, _what(plan, path, product))
            owns = owns_product if product else fmt.owns
            if path.exists() or path.is_symlink():
                if not overwrite:
                    raise ConfigError(f"{path}: exists; pass --overwrite to replace it")
                if path.is_symlink() or owns is None or not owns(path):
                    raise SinkError(
                        f"{path}: exists and was not written by tilewise, so it is never replaced; "
                        "move it away or choose another --out"
                    )


def remove_stale_temp_files(outputs: Iterable[Path]) -> int:
    """Remove what killed runs left beside ``outputs`` (nobody holds their lock); returns how many were removed.

    Only tilewise's own temporary names are touched, never a link (see
    :func:`tiling.formats.base.stale_temp_files`); lock files are not counted.
    """
    removed = 0
    for out in outputs:
        for leftover in staging.remove_stale(out.parent, f".{out.name}."):
            if not leftover.name.endswith(staging.LOCK_SUFFIX):
                log.info("removed %s, left by a run that was killed", leftover)
                removed += 1
    return removed


def check_model(cfg: PipelineConfig, plans: Sequence[ScenePlan], model: torch.nn.Module | None) -> None:
    """Fail before any work if the weights are unreadable or a scene's bands do not fit the model.

    A randomly initialised DeepLabV3 fits any band count, so only a weights
    file is checked here, mapped and against a model on the meta device
    (the actors read it where they run). One model
    pool serves the whole run, so every scene must give it the same channels.
    """
    channels = plans[0].channels
    for p in plans[1:]:
        if p.channels != channels:
            raise ConfigError(
                f"{p.src}: gives the model {p.channels} input channels, but {plans[0].src} gives {channels}; "
                "one run uses one model: choose the same bands (--bands) for every scene"
            )
    if model is None:
        if cfg.model.weights is not None:
            check_weights(cfg.model.backbone, cfg.model.classes, channels, cfg.model.weights)
        return
    check_bands(model, channels)
