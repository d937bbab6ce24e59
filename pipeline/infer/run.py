"""Inference over one scene or many: plan every scene, then stream them all through one model pool.

:func:`infer_scene` and :func:`infer_many` are the Python API; the CLI's
``tilewise infer`` calls them. Planning (opening sources, checking outputs)
happens before Ray is needed; both start Ray in the background first (as
the CLI does before it imports torch), so the two waits overlap.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from models import Normalization
from pipeline import ray_env
from pipeline.config import PipelineConfig
from pipeline.errors import USER_ERRORS
from pipeline.infer.engine import SceneFailure, SceneOutput, run_plans
from pipeline.infer.exported import apply_export
from pipeline.infer.plan import (
    ScenePlan,
    check_model,
    check_outputs,
    plan_each,
    plan_scene,
    remove_stale_temp_files,
)
from pipeline.products.files import planned_products
from pipeline.ray_env import unwrap_user_error
from tiling.core.labels import class_colors
from tiling.formats import natural_output, output_format, sniff

__all__ = ["USER_ERRORS", "InferenceResult", "infer_many", "infer_scene", "mask_path_for"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceResult:
    """What a scene's run produced and how fast."""

    mask: Path
    probs: Path | None  # the probabilities where they are a file of their own (a COG's sidecar)
    tiles: int
    skipped: int
    seconds: float  # from the call until the outputs were published (planning and start-up included)
    first_result_seconds: float = 0.0  # from the call until the scene's first tiles were stitched
    stitch_peak_bytes: int = 0  # largest accumulator memory the stitcher held
    stitch_spills: int = 0  # accumulator blocks spilled to disk (0 unless the frontier outgrew its cap)
    published: tuple[Path, ...] = ()  # every path written, mask first
    precision: str = ""  # the forward pass's precision where the model ran (what "auto" became)
    model_seconds: float = 0.0  # the model actors' time on this scene's tiles, summed over actors
    # the classes the mask was written with (an export's, where --weights carried them), and their
    # colours: the one source the products made from this mask take theirs from
    class_names: tuple[str, ...] = ()
    class_colors: tuple[tuple[int, int, int], ...] = ()

    @property
    def tiles_per_second(self) -> float:
        """Tiles per second over the whole call, start-up included."""
        return self.tiles / self.seconds if self.seconds > 0 else math.inf


def _result(out: SceneOutput, plan: ScenePlan) -> InferenceResult:
    probs = next((p for p in out.published[1:] if ".probs." in p.name), None)
    request = plan.request
    return InferenceResult(
        out.published[0], probs, out.tiles, out.skipped, out.seconds, out.first_result_seconds,
        out.stitch_peak_bytes, out.stitch_spills, out.published, out.precision, out.model_seconds,
        tuple(request.class_names), tuple(request.class_colors or class_colors(request.class_names)),
    )  # fmt: skip


def _raise_user_error(e: BaseException) -> None:
    """Re-raise a user error found inside a Ray error chain as itself (one line for the CLI)."""
    cause = unwrap_user_error(e, USER_ERRORS) if not isinstance(e, USER_ERRORS) else None
    if cause is not None:
        raise cause from None


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
        out: the output mask; it appears only when complete. An existing
            ``out`` is replaced only with ``config.overwrite`` and only if
            tilewise wrote it. The paths of the products ``config.products``
            asks for are checked by the same rule (they are made afterwards
            by :func:`pipeline.products.make_products`).
        config: options; defaults otherwise.
        model: any ``torch.nn.Module`` mapping (B, C, H, W) to (B, K, H, W);
            DeepLabV3 per ``config.model`` when None.
        normalization: per-channel mean/std; estimated from a sample of the scene when None.
        progress: show a progress bar with tiles/s and ETA.

    Raises:
        TilingError, ModelError: for bad input or options (nothing is left at ``out``).
    """
    started = time.perf_counter()
    cfg = (config or PipelineConfig()).validate()
    ray_env.start_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_mb)  # starts while the scene is planned
    # weights exported by `tilewise train` carry classes, bands and the training normalisation
    cfg, trained_norm = apply_export(cfg)
    if model is None:
        cfg.model.require_weights()
    cfg.class_colors()  # --class-colors against the final class names, once
    normalization = normalization or trained_norm
    plan = plan_scene(0, src, out, cfg, normalization, model)
    plan = replace(plan, products=planned_products(plan.out, cfg, batch=False))
    check_outputs([plan], cfg.overwrite)
    check_model(cfg, [plan], model)
    remove_stale_temp_files((*plan.outputs, *plan.products))
    try:
        outcome = run_plans([plan], cfg, model, progress, started=started)[0]
    except BaseException as e:
        _raise_user_error(e)
        raise
    if isinstance(outcome, SceneFailure):
        raise outcome.error
    result = _result(outcome, plan)
    log.info("%s: %d tiles (%d skipped as nodata) in %.1fs", result.mask, result.tiles, result.skipped, result.seconds)
    return result


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
    sources: Sequence[str | Path],
    out_dir: str | Path,
    config: PipelineConfig | None = None,
    progress: bool = True,
    model: torch.nn.Module | None = None,
) -> dict[Path, InferenceResult | Exception]:
    """Segment several scenes into ``out_dir`` through one model pool; a scene that fails does not stop the others.

    Every output is planned first: two sources that would write the same
    mask, or a mask that would land on an input, are refused before any work.
    Errors that are not user errors (bugs) propagate.

    Returns:
        For each source, its result or the user error that stopped it.

    Raises:
        ConfigError: if two scenes would write the same mask, or a mask is an input.
    """
    started = time.perf_counter()
    cfg = (config or PipelineConfig()).validate()
    ray_env.start_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_mb)  # starts while the scenes are planned
    cfg, trained_norm = apply_export(cfg)
    if model is None:
        cfg.model.require_weights()
    cfg.class_colors()  # --class-colors against the final class names, once for the run
    outcome: dict[Path, InferenceResult | Exception] = {}
    plans: list[ScenePlan] = []

    def plan_one(src: str | Path) -> ScenePlan:
        plan = plan_scene(0, src, mask_path_for(src, out_dir, cfg.output_format), cfg, trained_norm, model)
        return replace(plan, products=planned_products(plan.out, cfg, batch=True))

    for src, planned in plan_each(sources, plan_one):
        if isinstance(planned, Exception):
            log.error("%s", planned)
            outcome[Path(src)] = planned
        else:
            plans.append(replace(planned, scene=len(plans)))  # numbered among the scenes that run
    check_outputs(plans, cfg.overwrite)
    if plans:
        check_model(cfg, plans, model)
        remove_stale_temp_files(p for plan in plans for p in (*plan.outputs, *plan.products))
        try:
            results = run_plans(plans, cfg, model, progress, started=started)
        except BaseException as e:
            _raise_user_error(e)
            raise
        for plan in plans:
            r = results[plan.scene]
            if isinstance(r, SceneFailure):
                if r.internal:
                    log.error("%s: internal error: %s", plan.src, r.error)
                outcome[plan.src] = r.error
            else:
                outcome[plan.src] = _result(r, plan)
    return {Path(s): outcome[Path(s)] for s in sources if Path(s) in outcome}
