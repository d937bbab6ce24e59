"""Fine-tuning on Ray Train: plan on the driver, DDP on the workers, files in ``out``.

Everything that can be wrong with the configuration or the data is found
here, on the driver, before any worker starts: the card's ranges, unreadable
files, labels on another grid, a missing vector attribute, label values
outside the classes, an empty training set, a split that would leak.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray
import torch
from ray.train import DataConfig as RayDataConfig
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from tqdm.auto import tqdm

from models import Init, pretrained_weights
from models.train import ExportInfo, build_augmentation, load_checkpoint
from pipeline.errors import USER_ERRORS
from pipeline.ray_env import ensure_ray, unwrap_user_error
from pipeline.ray_env import shutdown as shutdown_ray
from pipeline.train.config import TrainConfig, parse_class_weights, parse_label_map
from pipeline.train.data import (
    epoch_rows,
    open_scenes,
    plan,
    read_batch,
    scene_normalization,
    tile_window,
    val_rows,
)
from pipeline.train.loop import LoopConfig, steps_per_epoch, train_loop
from pipeline.train.outputs import check_out, config_text, is_url, remove_temp_files
from tiling.core import Window, window_bounds
from tiling.errors import ConfigError

__all__ = ["TrainResult", "init_weights", "train"]

log = logging.getLogger(__name__)

#: Ray Train's own storage inside the run folder.
RAY_STORAGE = ".ray"


@dataclass(frozen=True)
class TrainResult:
    """What a run wrote and measured."""

    out: Path
    model: Path  # the export: weights + metadata, for ``tilewise infer --weights``
    checkpoint: Path
    metrics: Path
    history: list[dict[str, Any]]
    seconds: float
    train_tiles: int
    val_tiles: int
    val_windows: list[tuple[int, Window]]  # (scene index, window) of every validation tile


def init_weights(init: str, backbone: Any, download: bool) -> str | None:
    """The weights file a run starts from: None for ``none``, torchvision's cached file, or a path.

    Raises:
        WeightsError: if the published weights are not cached (and not downloadable), or PATH is missing.
    """
    key = str(init).strip()
    if key.lower() == Init.NONE.value:
        return None
    if key.lower() in (Init.COCO.value, Init.IMAGENET.value):
        return str(pretrained_weights(key.lower(), backbone, download))
    if is_url(key):
        raise ConfigError(f"init: {key}: a checkpoint is read from a file system; copy it here first")
    if not Path(key).is_file():
        raise ConfigError(f"init: {key}: no such file; use coco, imagenet, none or a checkpoint path")
    return key


def _resume_path(resume: str | None) -> Path | None:
    if resume is None:
        return None
    p = Path(resume)
    return p / "checkpoint.pt" if p.is_dir() else p


def _absolute(path: str) -> str:
    """A local path made absolute: Ray's workers run in another folder. URLs stay as they are."""
    return path if is_url(path) else str(Path(path).expanduser().absolute())


def resolve_paths(cfg: TrainConfig) -> TrainConfig:
    """A copy whose scenes, labels, ``init`` checkpoint, ``resume`` and ``out`` are absolute paths."""
    d, m, r = cfg.data, cfg.model, cfg.run
    data = replace(
        d, image=tuple(map(_absolute, d.image)), labels=tuple(map(_absolute, d.labels)),
        val_image=tuple(map(_absolute, d.val_image)), val_labels=tuple(map(_absolute, d.val_labels)),
    )  # fmt: skip
    named = str(m.init).strip().lower() in {i.value for i in Init}
    model = m if named else replace(m, init=_absolute(str(m.init).strip()))
    run = replace(r, out=_absolute(r.out), resume=None if r.resume is None else _absolute(r.resume))
    return replace(cfg, data=data, model=model, run=run)


#: What a run is: a resume that changes any of these would mix two runs (another split, other classes).
RESUME_KEYS = (
    "image", "labels", "val_image", "val_labels", "classes", "tile", "bands", "label_map", "ignore_index",
    "split", "block", "val_fraction", "seed", "backbone",
)  # fmt: skip


def run_key(cfg: TrainConfig) -> dict[str, Any]:
    """The :data:`RESUME_KEYS` of ``cfg`` (paths absolute), as the checkpoint keeps them."""
    flat = cfg.to_flat()
    return {k: flat[k] for k in RESUME_KEYS}


def check_resume(path: Path, state: dict[str, Any], key: dict[str, Any]) -> None:
    """Refuse to continue a checkpoint with data or a model other than the run's that wrote it.

    Checkpoints written before runs recorded their key are not checked here
    (a model that does not fit them is refused by the worker, in one line).

    Raises:
        ConfigError: naming the first key that differs, with both values.
    """
    saved = (state.get("extra") or {}).get("run")
    if not isinstance(saved, dict):
        return
    for k, now in key.items():
        if k in saved and saved[k] != now:
            raise ConfigError(
                f"{path}: the run was trained with {k} {saved[k]!r}, this call gives {now!r}; resume with "
                f"the same {k}, or start a new run in another --out"
            )


def _resume_state(resume: Path | None, cfg: TrainConfig) -> tuple[int, list[dict[str, Any]]]:
    """(epochs done, history) of the checkpoint to continue; (0, []) for a new run.

    Raises:
        WeightsError: if ``resume`` is no training checkpoint.
        ConfigError: if it is another run's, or has nothing left to train.
    """
    if resume is None:
        return 0, []
    if is_url(str(cfg.run.resume)):
        raise ConfigError(f"resume: {cfg.run.resume}: a checkpoint is read from a file system; copy it here first")
    state = load_checkpoint(resume)
    check_resume(resume, state, run_key(cfg))
    done = int(state["epoch"])
    if done >= cfg.optim.epochs:
        raise ConfigError(f"{resume}: already trained {done} epochs; raise --epochs to continue")
    if cfg.run.stop_after is not None and cfg.run.stop_after <= done:
        raise ConfigError(f"stop_after: {cfg.run.stop_after} epochs are already done; nothing to train")
    return done, list(state["history"])


def _resources(cfg: TrainConfig) -> tuple[dict[str, float], float, int]:
    """(resources per worker, CPUs per read task, torch threads per worker)."""
    cpus = float(ray.cluster_resources().get("CPU", 1))
    world = cfg.run.num_workers
    if cfg.run.use_gpu:
        return {"GPU": 1, "CPU": cfg.run.cpus_per_worker or 1}, 1.0, 2
    # Keep one CPU for Ray Data's read tasks, or the workers would wait forever for tiles.
    per = cfg.run.cpus_per_worker or max(min(1.0, (cpus - 1) / world), 0.25)
    if per * world > cpus - 0.25:
        raise ConfigError(
            f"num_workers: {world} workers x {per:g} CPUs leave no CPU of {cpus:g} for reading tiles; "
            "use fewer workers or --cpus-per-worker"
        )
    return {"CPU": per}, max(min(0.5, cpus - per * world), 0.25), max(1, int(cpus // world))


def train(
    config: TrainConfig,
    progress: bool = True,
    model_fn: Callable[[], torch.nn.Module] | None = None,
) -> TrainResult:
    """Fine-tune DeepLabV3 on the configured scenes with DDP on Ray Train.

    Args:
        config: the run; validated here.
        progress: show a progress bar (samples/s and ETA) fed by rank 0.
        model_fn: builds a stand-in model on each worker (tests use a small
            network without BatchNorm); DeepLabV3 per ``config.model`` when None.

    Returns:
        Paths of the export, checkpoint and metrics, and the per-epoch history.

    Raises:
        TilingError, ModelError: for bad configuration or data, before any worker starts.
    """
    t0 = time.perf_counter()
    cfg = resolve_paths(config.validate())
    d, o, m = cfg.data, cfg.optim, cfg.model
    build_augmentation(cfg.run.augment, cfg.run.augment_custom, d.ignore_index)  # refuse a bad list now
    resume = _resume_path(cfg.run.resume)
    out = check_out(cfg.run.out, resume)
    start_epoch, history = _resume_state(resume, cfg)
    stop = min(o.epochs, cfg.run.stop_after or o.epochs)
    weights = None if model_fn is not None else init_weights(m.init, m.backbone, m.download)
    train_scenes, val_scenes = open_scenes(d)
    the_plan, scenes = plan(train_scenes, val_scenes, d, cfg.run.seed)
    norm = scene_normalization(train_scenes, d)
    world = cfg.run.num_workers
    per_step = world * o.batch_size * o.accumulate
    first = epoch_rows(the_plan, scenes, d, start_epoch, cfg.run.seed, per_step)
    steps = steps_per_epoch(len(first), world, o.batch_size, o.accumulate)
    if steps < 1:
        raise ConfigError(
            f"{scenes[0].labels.path}: the training set is empty for this batch: {len(the_plan.train)} tiles give "
            f"no full step of {per_step} ({world} workers x batch {o.batch_size} x accumulate {o.accumulate}); "
            "use a smaller --tile or --batch-size, or --samples"
        )
    ensure_ray(cfg.run.address, cfg.run.num_cpus)
    resources, read_cpus, threads = _resources(cfg)
    rows = first + [r for e in range(start_epoch + 1, stop) for r in epoch_rows(the_plan, scenes, d, e, cfg.run.seed, per_step)]  # fmt: skip
    train_ds, val_ds = _datasets(cfg, the_plan, scenes, norm, rows, read_cpus)
    export = _export_info(cfg, scenes[0].channels, norm, custom=model_fn is not None)
    queue = _queue() if progress else None
    loop = LoopConfig(
        out=str(out), backbone=str(m.backbone.value if hasattr(m.backbone, "value") else m.backbone),
        classes=d.classes, class_names=tuple(d.names), channels=scenes[0].channels, init_weights=weights,
        precision=str(m.precision.value if hasattr(m.precision, "value") else m.precision),
        grad_checkpointing=m.grad_checkpointing, precise_bn=m.precise_bn, lr=o.lr, weight_decay=o.weight_decay, batch_size=o.batch_size,
        accumulate=o.accumulate, epochs=o.epochs, start_epoch=start_epoch, stop_epoch=stop, steps_per_epoch=steps,
        ignore_index=d.ignore_index, class_weights=_class_weights(o.class_weights, the_plan.class_pixels, d.classes),
        seed=cfg.run.seed, threads=threads,
        resume=str(resume) if resume else None, export=export.to_dict(), progress=queue, model_fn=model_fn,
        history=history, config_yaml=config_text(cfg.to_flat()), run_key=run_key(cfg),
    )  # fmt: skip
    created = not out.exists()
    out.mkdir(exist_ok=True)  # the run starts: the folder was checked before anything else
    ray_run = f"train-{int(time.time())}-{os.getpid()}"  # Ray Train's records of this run, under out/.ray
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"loop": loop},
        torch_config=TorchConfig(backend="nccl" if cfg.run.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=world, use_gpu=cfg.run.use_gpu, resources_per_worker=resources),
        datasets={"train": train_ds, "val": val_ds},
        dataset_config=RayDataConfig(datasets_to_split="all"),
        run_config=RunConfig(storage_path=str(out / RAY_STORAGE), name=ray_run),
    )
    log.info("training on %d worker(s): %d steps per epoch of %d tiles", world, steps, per_step)
    try:
        _fit(trainer, queue, progress)
    except BaseException as e:
        _clean_up(out, created, ray_run, stopped=not isinstance(e, Exception))
        raise
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    return TrainResult(
        out, out / "model.pt", out / "checkpoint.pt", out / "metrics.json", metrics["epochs"],
        time.perf_counter() - t0, len(the_plan.train), len(the_plan.val),
        [(t.scene, tile_window(t, d.tile, scenes[t.scene].volume)) for t in the_plan.val],
    )  # fmt: skip


def _datasets(
    cfg: TrainConfig, the_plan: Any, scenes: list[Any], norm: Any, rows: list[dict[str, Any]], read_cpus: float
) -> tuple[Any, Any]:
    """The training and validation tile streams: Ray Data read tasks running :func:`read_batch`."""
    d, batch = cfg.data, cfg.optim.batch_size
    read_kwargs = dict(
        scenes=scenes, tile=d.tile, normalization=norm, ignore_index=d.ignore_index,
        augment_preset=cfg.run.augment, augment_custom=list(cfg.run.augment_custom),
        window=None if d.window is None else window_bounds(d.window),
    )  # fmt: skip
    reader: Any = read_batch  # Ray's stubs expect a one-argument UDF; the rest come as fn_kwargs
    train_ds = ray.data.from_items(rows).map_batches(
        reader, fn_kwargs=read_kwargs, batch_size=batch, num_cpus=read_cpus
    )
    val_ds = ray.data.from_items(val_rows(the_plan, cfg.run.num_workers)).map_batches(
        reader, fn_kwargs={**read_kwargs, "augment_preset": "none", "augment_custom": []},
        batch_size=batch, num_cpus=read_cpus,
    )  # fmt: skip
    return train_ds, val_ds


def _export_info(cfg: TrainConfig, channels: int, norm: Any, custom: bool) -> ExportInfo:
    """What ``model.pt`` records for inference: classes, bands, normalisation, label map, tile."""
    d, m = cfg.data, cfg.model
    return ExportInfo(
        backbone="custom" if custom else str(getattr(m.backbone, "value", m.backbone)),
        classes=d.classes, class_names=tuple(d.names), in_channels=channels, mean=norm.mean, std=norm.std,
        bands=d.bands, label_map=parse_label_map(d.label_map, d.ignore_index), ignore_index=d.ignore_index,
        tile=d.tile, extra={"window": d.window},
    )  # fmt: skip


def _clean_up(out: Path, created: bool, ray_run: str, stopped: bool) -> None:
    """Leave no temporary file after a failed or stopped run, nor Ray's records of it, nor a folder it made
    and wrote nothing to.

    ``stopped`` (Ctrl-C, SIGTERM) means workers may still run: a Ray this
    process started is shut down first, so none writes after the clean-up.
    """
    if stopped:
        shutdown_ray()
    remove_temp_files(out)
    if (out / "checkpoint.pt").exists():
        return  # an epoch finished (now or before a resume): the run goes on from it, Ray's records stay
    storage = out / RAY_STORAGE
    shutil.rmtree(storage / ray_run, ignore_errors=True)
    if storage.is_dir() and not any(storage.iterdir()):
        storage.rmdir()
    if created and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def _class_weights(spec: str | None, pixels: Any, classes: int) -> tuple[float, ...] | None:
    """Loss weights per class: None, given numbers, or ``auto``: 1/sqrt(frequency), mean 1 over present classes.

    Raises:
        ConfigError: if the numbers are not one per class.
    """
    if spec is None:
        return None
    if spec == "auto":
        import numpy as np

        freq = np.asarray(pixels, float) / max(float(np.sum(pixels)), 1.0)
        w = np.where(freq > 0, 1 / np.sqrt(np.maximum(freq, 1e-12)), 0.0)
        w = w / w[freq > 0].mean()
        log.info("class weights (auto): %s", np.round(w, 3))
        return tuple(float(x) for x in w)
    return parse_class_weights(spec, classes)


def _queue() -> Any:
    from ray.util.queue import Queue

    return Queue(maxsize=1000, actor_options={"num_cpus": 0})


def _fit(trainer: TorchTrainer, queue: Any, progress: bool) -> None:
    """Run ``trainer.fit()`` while the driver draws rank 0's progress; user errors come back as themselves."""
    box: dict[str, BaseException] = {}

    def run() -> None:
        try:
            trainer.fit()
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    bar, epoch = None, -1
    while thread.is_alive():
        thread.join(0.5)
        while queue is not None and not queue.empty():
            try:
                e, done, total = queue.get_nowait()
            except Exception:
                break
            if e != epoch:
                if bar is not None:
                    bar.close()
                bar, epoch = tqdm(total=total, unit="sample", desc=f"epoch {e + 1}", disable=not progress), e
            assert bar is not None
            bar.update(done - bar.n)
    if bar is not None:
        bar.close()
    if queue is not None:
        queue.shutdown()
    error = box.get("error")
    if error is not None:
        cause = _user_error(error)
        if cause is not None:
            raise cause from None
        raise error


#: How a traceback's last line names an error of tilewise's own hierarchy.
_ERROR_LINE = re.compile(r"^(tiling\.errors|models\.errors)\.(\w+): (.+)$", re.MULTILINE)


def _user_error(e: BaseException) -> BaseException | None:
    """The user error (bad data, a full disk...) behind a failed fit, or None for a bug.

    A worker's error comes back as the exception itself; one raised in a Ray
    Data read task reaches the worker through Ray Data's split coordinator,
    which keeps only its traceback text, so the error is rebuilt from its line
    there (tilewise's messages are one line by design).
    """
    failures = [e, *getattr(e, "worker_failures", {}).values()]
    for inner in failures:
        found = unwrap_user_error(inner, USER_ERRORS)
        if found is not None:
            return found
    for inner in failures:
        for module, name, message in _ERROR_LINE.findall(str(inner)):
            kind = getattr(importlib.import_module(module), name, None)
            if isinstance(kind, type) and issubclass(kind, USER_ERRORS):
                return kind(message.strip())
    return None


def with_overrides(cfg: TrainConfig, **run: Any) -> TrainConfig:
    """A copy with ``run`` fields replaced (the demo and tests set out, workers, resume)."""
    return replace(cfg, run=replace(cfg.run, **run))
