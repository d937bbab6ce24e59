"""Inference over one scene: plan -> read (Ray tasks) -> predict (Ray actors) -> stitch -> sink."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import ray
import torch
from tqdm.auto import tqdm

from models import ModelError, Normalization, build_model, first_conv
from models.errors import BandCountError
from pipeline.config import PipelineConfig
from pipeline.datasource import TileDatasource
from pipeline.predict import PredictUDF
from pipeline.ray_env import ensure_ray, unwrap_user_error
from tiling import ConfigError, Stitcher, TileGrid, TilingError, open_source
from tiling.cog import CogSink, probs_path_for
from tiling.stats import sample_band_stats

__all__ = ["USER_ERRORS", "InferenceResult", "infer_many", "infer_scene", "mask_path_for"]

log = logging.getLogger(__name__)

#: Errors caused by input or options; the CLI prints them as one line.
USER_ERRORS: tuple[type[Exception], ...] = (TilingError, ModelError)
#: Output block size (the COG's internal tiles, and the stitcher's unit).
OUTPUT_BLOCK = 256


@dataclass(frozen=True)
class InferenceResult:
    """What a run produced and how fast."""

    mask: Path
    probs: Path | None
    tiles: int
    skipped: int
    seconds: float
    stitch_peak_bytes: int = 0  # largest accumulator memory the stitcher held
    stitch_spills: int = 0  # accumulator blocks spilled to disk (0 unless the frontier outgrew its cap)

    @property
    def tiles_per_second(self) -> float:
        return self.tiles / self.seconds if self.seconds > 0 else math.inf


def _resources(cfg: PipelineConfig, device: str) -> tuple[int, dict, int]:
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
    """Fail before any work if the weights are unreadable or the bands do not fit."""
    if model is None:
        build_model(cfg.model.backbone, cfg.model.classes, bands, cfg.model.weights)
        return
    conv = first_conv(model)
    if conv is not None and conv.in_channels != bands:
        raise BandCountError(f"the image has {bands} band(s) but the model takes {conv.in_channels}; choose bands with --bands")


def infer_scene(
    src: str | Path,
    out: str | Path,
    config: PipelineConfig | None = None,
    model: torch.nn.Module | None = None,
    normalization: Normalization | None = None,
    progress: bool = True,
) -> InferenceResult:
    """Segment the GeoTIFF ``src`` into the COG mask ``out``.

    Args:
        src: the input raster.
        out: the output mask; it appears only when complete.
        config: options; defaults otherwise.
        model: any ``torch.nn.Module`` mapping (B, C, H, W) to (B, K, H, W);
            DeepLabV3 per ``config.model`` when None.
        normalization: per-band mean/std; estimated from a sample of the scene when None.
        progress: show a progress bar with tiles/s and ETA.

    Raises:
        TilingError, ModelError: for bad input or options (nothing is left at ``out``).
    """
    cfg = (config or PipelineConfig()).validate()
    t0 = time.perf_counter()
    with open_source(src, bands=cfg.tiling.bands) as source:
        grid = TileGrid(source.shape, cfg.tiling.tile, cfg.tiling.overlap, cfg.tiling.edge, source.block_shape)
        _check_model(cfg, source.count, model)
        if normalization is None:
            normalization = Normalization(*sample_band_stats(source))
        spec, georef, bands, itemsize = source.spec(), source.georef, source.count, source.dtype.itemsize
    if georef.crs is None and not cfg.allow_no_crs:
        raise ConfigError(
            f"{src}: has no CRS, so the mask could not be placed on a map; "
            "pass --allow-no-crs to write a mask on the bare pixel grid"
        )
    sink = CogSink(out, grid.shape, georef, cfg.model.names, cfg.save_probs, OUTPUT_BLOCK)
    try:
        stitcher = _run(cfg, grid, model, normalization, spec, bands, itemsize, sink, progress)
        mask = sink.finalize()
    except BaseException as e:
        sink.abort()
        cause = unwrap_user_error(e, USER_ERRORS) if not isinstance(e, USER_ERRORS) else None
        if cause is not None:
            raise cause from None
        raise
    result = InferenceResult(
        mask, probs_path_for(mask) if cfg.save_probs else None, len(grid), stitcher.skipped,
        time.perf_counter() - t0, stitcher.peak_open_bytes, stitcher.spills,
    )  # fmt: skip
    log.info("%s: %d tiles (%d skipped as nodata) in %.1fs, %.1f tiles/s", mask, result.tiles, result.skipped, result.seconds, result.tiles_per_second)
    return result


def _run(cfg, grid, model, normalization, spec, bands, itemsize, sink, progress) -> Stitcher:
    ensure_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_mb)
    options = ray.data.DataContext.get_current().execution_options
    options.resource_limits = options.resource_limits.copy(object_store_memory=cfg.inference.inflight_mb * 2**20)
    device = str(cfg.inference.device or ("cuda" if ray.cluster_resources().get("GPU") else "cpu"))
    actors, resources, threads = _resources(cfg, device)
    batch = cfg.inference.batch
    ds = ray.data.read_datasource(
        TileDatasource(spec, grid.windows, bands, itemsize, cfg.inference.tiles_per_task or 4 * batch, batch),
        override_num_blocks=math.ceil(len(grid) / (cfg.inference.tiles_per_task or 4 * batch)),
    ).map_batches(
        PredictUDF,
        fn_constructor_kwargs=dict(
            model=model, model_config=cfg.model, bands=bands, normalization=normalization,
            device=device, threads=threads,
        ),
        batch_size=batch, compute=ray.data.ActorPoolStrategy(size=actors), batch_format="numpy", **resources,
    )  # fmt: skip
    stitcher = Stitcher(grid, cfg.model.classes, cfg.tiling.blend, sink, (OUTPUT_BLOCK,) * 2, cfg.save_probs)
    with tqdm(total=len(grid), unit="tile", desc=Path(spec.path).name, disable=not progress, smoothing=0.1) as bar:
        for out in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
            for i, index in enumerate(out["index"]):
                skip = bool(out["skip"][i])
                stitcher.add(int(index), None if skip else out["scores"][i], out["valid"][i])
            bar.update(len(out["index"]))
    stitcher.close()
    return stitcher



def mask_path_for(src: str | Path, out_dir: str | Path) -> Path:
    """Where a batch run writes the mask of ``src``: ``<out_dir>/<stem>_mask.tif``."""
    return Path(out_dir) / f"{Path(src).stem}_mask.tif"


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
            outcome[Path(src)] = infer_scene(src, mask_path_for(src, out_dir), config, progress=progress)
        except USER_ERRORS as e:
            log.error("%s", e)
            outcome[Path(src)] = e
    return outcome
