"""Inference over one scene: plan -> read (Ray tasks) -> predict (Ray actors) -> stitch -> sink."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from tqdm.auto import tqdm

from models import ModelError, Normalization, build_model, check_bands
from pipeline.config import PipelineConfig
from pipeline.infer.datasource import TileDatasource
from pipeline.infer.exported import apply_export
from pipeline.infer.predict import PredictUDF
from pipeline.ray_env import ensure_ray, unwrap_user_error
from tiling.core import Stitcher, TileGrid, TileLayout, sample_band_stats
from tiling.errors import TilingError
from tiling.formats import SourceSpec, natural_output, open_sink, open_source, output_format, sniff, spec_of
from tiling.formats.base import Sink, SinkRequest, Source

__all__ = ["USER_ERRORS", "InferenceResult", "infer_many", "infer_scene", "mask_path_for"]

log = logging.getLogger(__name__)

#: Errors caused by input or options; the CLI prints them as one line.
USER_ERRORS: tuple[type[Exception], ...] = (TilingError, ModelError)


@dataclass(frozen=True)
class InferenceResult:
    """What a run produced and how fast."""

    mask: Path
    probs: Path | None  # the probabilities where they are a file of their own (a COG's sidecar)
    tiles: int
    skipped: int
    seconds: float
    first_result_seconds: float = 0.0  # from the call until the first predicted tiles reached the stitcher
    stitch_peak_bytes: int = 0  # largest accumulator memory the stitcher held
    stitch_spills: int = 0  # accumulator blocks spilled to disk (0 unless the frontier outgrew its cap)

    @property
    def tiles_per_second(self) -> float:
        """Tiles per second over the whole call, start-up included."""
        return self.tiles / self.seconds if self.seconds > 0 else math.inf


def _resources(cfg: PipelineConfig, device: str) -> tuple[int, dict[str, Any], int]:
    """(actors, ray resources per actor, torch threads per actor)."""
    cpus = int(ray.cluster_resources().get("CPU", 1))
    if device.startswith("cuda"):
        gpus = int(ray.cluster_resources().get("GPU", 0))
        actors = cfg.inference.actors or max(1, gpus)
        return actors, {"num_gpus": 1, "num_cpus": 1}, 2
    actors = cfg.inference.actors or 1
    # The actor reserves one CPU so read tasks can run beside it, but torch
    # uses every core the actors share: reading is cheap next to the model.
    return actors, {"num_cpus": 1}, max(1, cpus // actors)


def _check_model(cfg: PipelineConfig, bands: int, model: torch.nn.Module | None) -> None:
    """Fail before any work if the weights are unreadable or the bands do not fit.

    A randomly initialised DeepLabV3 fits any band count, so only a weights
    file is loaded here (the actors load it again where they run).
    """
    if model is None:
        if cfg.model.weights is not None:
            build_model(cfg.model.backbone, cfg.model.classes, bands, cfg.model.weights)
        return
    check_bands(model, bands)


def _normalization(source: Source, layout: TileLayout) -> Normalization:
    """Per-channel mean/std: fixed after intensity windowing, else sampled from the scene."""
    channels = source.count * layout.context
    if layout.intensity is not None:  # windowed into [0, 1]
        return Normalization((0.5,) * channels, (0.25,) * channels)
    mean, std = sample_band_stats(source)
    return Normalization(tuple(np.repeat(mean, layout.context)), tuple(np.repeat(std, layout.context)))


@dataclass(frozen=True)
class _Plan:
    """Everything the Ray part of a run needs, fixed before any work starts."""

    grid: TileGrid
    layout: TileLayout
    spec: SourceSpec
    channels: int
    itemsize: int
    block: tuple[int, ...]
    normalization: Normalization


def infer_scene(
    src: str | Path,
    out: str | Path,
    config: PipelineConfig | None = None,
    model: torch.nn.Module | None = None,
    normalization: Normalization | None = None,
    progress: bool = True,
) -> InferenceResult:
    """Segment ``src`` (GeoTIFF, DICOM or Zarr) into a mask at ``out``.

    The output format follows ``config.output_format`` or ``out``'s
    extension: ``.tif`` COG, ``.zarr`` OME-Zarr, ``.dcm`` DICOM SEG.
    Volumes are segmented slice by slice across ``config.tiling.axis``.

    Args:
        src: the input image, series folder or store.
        out: the output mask; it appears only when complete.
        config: options; defaults otherwise.
        model: any ``torch.nn.Module`` mapping (B, C, H, W) to (B, K, H, W);
            DeepLabV3 per ``config.model`` when None.
        normalization: per-channel mean/std; estimated from a sample of the scene when None.
        progress: show a progress bar with tiles/s and ETA.

    Raises:
        TilingError, ModelError: for bad input or options (nothing is left at ``out``).
    """
    cfg = (config or PipelineConfig()).validate()
    # weights exported by `tilewise train` carry classes, bands and the training normalisation
    cfg, trained_norm = apply_export(cfg)
    normalization = normalization or trained_norm
    src, out = Path(src), Path(out)
    t0 = time.perf_counter()
    fmt = output_format(out, cfg.output_format)
    with open_source(src, **cfg.input.source_options()) as source:
        volume = len(source.shape) == 3
        grid = TileGrid(
            source.shape, cfg.tiling.tile, cfg.tiling.overlap, cfg.tiling.edge, source.block_shape, cfg.tiling.axis
        )
        layout = TileLayout(
            cfg.tiling.axis if volume else None, cfg.tiling.context if volume else 1, cfg.input.bounds()
        )
        channels = layout.channels(source.count)
        _check_model(cfg, channels, model)
        request = SinkRequest(tuple(cfg.model.names), cfg.save_probs, cfg.allow_no_crs)
        sink = open_sink(out, source, fmt, request)
        try:
            plan = _Plan(
                grid, layout, spec_of(source), channels, source.dtype.itemsize, sink.block,
                normalization or _normalization(source, layout),
            )  # fmt: skip
        except BaseException:
            sink.abort()
            raise
    try:
        stitcher, first = _run(cfg, plan, model, sink, progress)
        published = sink.finalize()
    except BaseException as e:
        sink.abort()
        cause = unwrap_user_error(e, USER_ERRORS) if not isinstance(e, USER_ERRORS) else None
        if cause is not None:
            raise cause from None
        raise
    result = InferenceResult(
        published[0], published[1] if len(published) > 1 else None, len(grid),
        stitcher.skipped, time.perf_counter() - t0, first - t0, stitcher.peak_open_bytes, stitcher.spills,
    )  # fmt: skip
    log.info(
        "%s: %d tiles (%d skipped as nodata) in %.1fs, %.1f tiles/s",
        result.mask,
        result.tiles,
        result.skipped,
        result.seconds,
        result.tiles_per_second,
    )
    return result


def _run(
    cfg: PipelineConfig, plan: _Plan, model: torch.nn.Module | None, sink: Sink, progress: bool
) -> tuple[Stitcher, float]:
    """Stream the plan through Ray Data into the stitcher; returns it and when the first tiles arrived."""
    ensure_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_mb)
    options = ray.data.DataContext.get_current().execution_options
    options.resource_limits = options.resource_limits.copy(object_store_memory=cfg.inference.inflight_mb * 2**20)
    device = str(cfg.inference.device or ("cuda" if ray.cluster_resources().get("GPU") else "cpu"))
    actors, resources, threads = _resources(cfg, device)
    batch = cfg.inference.batch
    per_task = cfg.inference.tiles_per_task or 4 * batch
    grid = plan.grid
    ds = ray.data.read_datasource(
        TileDatasource(plan.spec, grid.windows, plan.channels, plan.itemsize, per_task, batch, plan.layout),
        override_num_blocks=math.ceil(len(grid) / per_task),
    ).map_batches(
        PredictUDF,
        fn_constructor_kwargs=dict(
            model=model, model_config=cfg.model, bands=plan.channels, normalization=plan.normalization,
            device=device, threads=threads,
        ),
        batch_size=batch, compute=ray.data.ActorPoolStrategy(size=actors), batch_format="numpy", **resources,
    )  # fmt: skip
    stitcher = Stitcher(grid, cfg.model.classes, cfg.tiling.blend, sink, plan.block, cfg.save_probs)
    first = None
    with tqdm(total=len(grid), unit="tile", desc=Path(plan.spec.path).name, disable=not progress, smoothing=0.1) as bar:
        for out in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
            first = first or time.perf_counter()
            scores, valid = plan.layout.restore(out["scores"], out["valid"])
            for i, index in enumerate(out["index"]):
                skip = bool(out["skip"][i])
                stitcher.add(int(index), None if skip else scores[i], valid[i])
            bar.update(len(out["index"]))
    stitcher.close()
    return stitcher, first or time.perf_counter()


def mask_path_for(src: str | Path, out_dir: str | Path, fmt: str | None = None) -> Path:
    """Where a batch run writes the mask of ``src``: ``<out_dir>/<stem>_mask<ext>``.

    The extension is the first suffix of ``fmt``'s format, else of the
    source's own format (``.tif`` for GeoTIFF, ``.zarr`` for Zarr, ``.dcm``
    DICOM SEG for DICOM).
    """
    src = Path(src)
    out_format = output_format("mask", fmt) if fmt else natural_output(sniff(src))
    stem = src.name.removesuffix(".zarr").removesuffix(".ome") if src.suffix == ".zarr" else src.stem
    return Path(out_dir) / f"{stem}_mask{out_format.suffixes[0]}"


def infer_many(
    sources: list[str | Path],
    out_dir: str | Path,
    config: PipelineConfig | None = None,
    progress: bool = True,
) -> dict[Path, InferenceResult | Exception]:
    """Segment several scenes into ``out_dir``; a scene that fails does not stop the others.

    Returns:
        For each source, its result or the user error that stopped it.
        Errors that are not user errors (bugs) still propagate.
    """
    outcome: dict[Path, InferenceResult | Exception] = {}
    for src in sources:
        try:
            out = mask_path_for(src, out_dir, config.output_format if config else None)
            outcome[Path(src)] = infer_scene(src, out, config, progress=progress)
        except USER_ERRORS as e:
            log.error("%s", e)
            outcome[Path(src)] = e
    return outcome
