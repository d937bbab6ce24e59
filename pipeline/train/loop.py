"""The per-worker training loop that Ray Train's ``TorchTrainer`` runs on every DDP worker.

Each worker builds the model (same seed everywhere; DDP broadcasts rank 0's
weights anyway), wraps it with ``ray.train.torch.prepare_model`` (DDP over
gloo on CPUs, NCCL on GPUs), and reads its own shard of the tile stream with
``ray.train.get_dataset_shard``. Validation runs on each worker's shard of
the validation tiles without DDP hooks; confusion matrices and loss sums are
all-reduced, so the metrics are those of the whole validation set. Rank 0
writes checkpoints, the export, ``metrics.json`` and the plots to ``out``
(on a cluster, storage every node sees).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import torch
import torch.distributed as dist
from ray.train.torch import get_device, prepare_model

from models import Precision, build_model, enable_grad_checkpointing, resolve_precision
from models.errors import WeightsError
from models.train import (
    ConfusionMatrix,
    ExportInfo,
    evaluate_batch,
    export_model,
    load_checkpoint,
    out_of_memory,
    recalibrate_batchnorm,
    save_checkpoint,
    set_rng_state,
    train_step,
    unwrap,
)
from pipeline.train.outputs import write_atomically, write_text
from tiling.errors import ConfigError
from tiling.formats.base import sink_error
from tiling.version import mark

__all__ = ["LoopConfig", "train_loop"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopConfig:
    """What every worker needs, fixed by the driver (small and picklable)."""

    out: str
    backbone: str
    classes: int
    class_names: tuple[str, ...]
    channels: int
    init_weights: str | None
    precision: str
    grad_checkpointing: bool
    precise_bn: int  # training batches kept to re-estimate BatchNorm statistics before validation
    lr: float
    weight_decay: float
    batch_size: int
    accumulate: int
    epochs: int
    start_epoch: int
    stop_epoch: int  # the run ends after this epoch (< epochs when stopped early to resume later)
    steps_per_epoch: int
    ignore_index: int
    class_weights: tuple[float, ...] | None
    seed: int
    threads: int
    resume: str | None
    export: dict[str, Any]
    progress: Any = None  # a ray.util.queue.Queue for the driver's progress bar, or None
    model_fn: Callable[[], torch.nn.Module] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    config_yaml: str = ""  # the run's config.yaml, written with each epoch's files
    run_key: dict[str, Any] = field(default_factory=dict)  # what the run is, kept in the checkpoint for a resume


def _build(c: LoopConfig) -> torch.nn.Module:
    torch.manual_seed(c.seed)
    model = c.model_fn() if c.model_fn is not None else build_model(c.backbone, c.classes, c.channels, c.init_weights)
    if c.grad_checkpointing:
        enable_grad_checkpointing(model)
    return model


def _all_reduce(values: np.ndarray) -> np.ndarray:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    t = torch.from_numpy(np.ascontiguousarray(values, np.float64))
    dist.all_reduce(t)
    return t.numpy()


def _precise_bn(model: torch.nn.Module, batches: list[torch.Tensor]) -> None:
    """Recalibrate BatchNorm on the epoch's last batches, then average the statistics over workers."""
    net = unwrap(model)
    if not recalibrate_batchnorm(net, batches):
        return
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                for buf in (m.running_mean, m.running_var):
                    if buf is not None:
                        dist.all_reduce(buf)
                        buf /= dist.get_world_size()


def _validate(model: torch.nn.Module, c: LoopConfig, device: torch.device, precision: Precision) -> dict[str, Any]:
    matrix = ConfusionMatrix(c.classes, c.ignore_index)
    loss_sum, counted = 0.0, 0
    net = unwrap(model).eval()
    shard = ray.train.get_dataset_shard("val")
    for batch in shard.iter_torch_batches(batch_size=c.batch_size, device=device):
        s, n = evaluate_batch(net, batch["image"], batch["label"], matrix, precision=precision)
        loss_sum, counted = loss_sum + s, counted + n
    reduced = _all_reduce(np.concatenate([matrix.matrix.ravel().astype(np.float64), [loss_sum, counted]]))
    matrix.matrix = reduced[:-2].reshape(c.classes, c.classes).round().astype(np.int64)
    out = matrix.summary(c.class_names)
    out["val_loss"] = float(reduced[-2] / max(reduced[-1], 1))
    return out


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train's ``train_loop_per_worker``: ``config["loop"]`` is a :class:`LoopConfig`."""
    c: LoopConfig = config["loop"]
    torch.set_num_threads(c.threads)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = get_device()
    precision = resolve_precision(c.precision, device)
    model = prepare_model(_build(c))
    optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    total = c.epochs * c.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=max(total, 1), power=0.9)
    scaler = torch.amp.GradScaler(device.type) if precision is Precision.FP16 else None
    history = list(c.history)
    if c.resume is not None:
        state = load_checkpoint(c.resume)
        try:
            unwrap(model).load_state_dict(state["model"])
        except RuntimeError as e:  # checked on the driver for checkpoints that record their run
            raise WeightsError(f"{c.resume}: does not fit this run's model ({str(e).splitlines()[0]})") from None
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        history = list(state["history"])
    out = Path(c.out)
    batches = iter(ray.train.get_dataset_shard("train").iter_torch_batches(
        batch_size=c.batch_size, drop_last=True, device=device
    ))  # fmt: skip
    per_epoch = c.steps_per_epoch * c.accumulate
    weight = None if c.class_weights is None else torch.tensor(c.class_weights, dtype=torch.float32, device=device)
    try:
        for epoch in range(c.start_epoch, c.stop_epoch):
            torch.manual_seed(c.seed * 1000 + epoch * 10 + rank)  # dropout: the same draws after a resume
            model.train()
            t0, losses, kept = time.perf_counter(), [], []
            for k in range(per_epoch):
                batch = next(batches)
                if k >= per_epoch - c.precise_bn:
                    kept.append(batch["image"])
                step = (k + 1) % c.accumulate == 0
                sync: Any = model.no_sync() if (not step and hasattr(model, "no_sync")) else _null()  # type: ignore[operator]
                with sync:
                    losses.append(
                        train_step(
                            model, batch["image"], batch["label"], optimizer, precision=precision, scaler=scaler,
                            accumulate=c.accumulate, step=step, ignore_index=c.ignore_index, class_weight=weight,
                        )
                    )  # fmt: skip
                if step:
                    scheduler.step()
                if rank == 0 and c.progress is not None and (k % 2 == 1 or k == per_epoch - 1):
                    _progress(c.progress, epoch, (k + 1) * c.batch_size * world, per_epoch * c.batch_size * world)
            _precise_bn(model, kept)
            seconds = time.perf_counter() - t0
            train_loss = float(_all_reduce(np.array([np.sum(losses), len(losses)]))[0]) / max(len(losses) * world, 1)
            if not math.isfinite(train_loss):
                raise ConfigError(
                    f"training diverged: the training loss of epoch {epoch + 1} is {train_loss}; lower --lr "
                    f"(now {c.lr:g}) or the class weights; the files of the last finished epoch are kept"
                )
            metrics = _validate(model, c, device, precision)
            entry = {
                "epoch": epoch + 1, "train_loss": round(train_loss, 6), "val_loss": round(metrics.pop("val_loss"), 6),
                **metrics, "samples_per_s": round(per_epoch * c.batch_size * world / seconds, 3),
                "precision": str(precision),
                "seconds": round(seconds, 2),
            }  # fmt: skip
            history.append(entry)
            if rank == 0:
                _write_epoch(out, model, optimizer, scheduler, scaler, epoch + 1, history, c)
            ray.train.report({k: v for k, v in entry.items() if k != "confusion"})
    except Exception as e:
        oom = out_of_memory(e)
        if oom is not None:
            raise oom from None
        raise


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(queue: Any, epoch: int, done: int, total: int) -> None:
    try:
        queue.put_nowait((epoch, done, total))
    except Exception:  # a full or gone queue must never stop training
        pass


def _write_epoch(
    out: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any, scaler: Any, epoch: int,
    history: list[dict[str, Any]], c: LoopConfig,
) -> None:  # fmt: skip
    """Checkpoint, export, metrics.json, config.yaml and plots after an epoch (rank 0), each renamed into place.

    Raises:
        SinkError: one line if a file cannot be written (a full disk); no temporary file is left.
    """
    from pipeline.train.plots import plot_confusion, plot_curves

    with _writing(out / "checkpoint.pt"):
        extra = {"run": c.run_key}
        save_checkpoint(out / "checkpoint.pt", model, optimizer, scheduler, scaler, epoch, history, extra)
    info = dict(c.export)
    info["extra"] = {**info.get("extra", {}), "epoch": epoch, "val_miou": history[-1]["miou"]}
    with _writing(out / "model.pt"):
        export_model(out / "model.pt", model, ExportInfo.from_dict(info))
    metrics = {"tilewise": mark(), "epochs": history, "classes": list(c.class_names)}
    write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    write_text(out / "config.yaml", c.config_yaml)
    write_atomically(out / "curves.png", lambda tmp: plot_curves(history, tmp))
    write_atomically(out / "confusion.png", lambda tmp: plot_confusion(history[-1]["confusion"], c.class_names, tmp))


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn a failed write of ``path`` (OSError, or torch's RuntimeError for a short write) into one line."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        raise sink_error(path, e) from e


def steps_per_epoch(rows: int, world: int, batch: int, accumulate: int) -> int:
    """Optimizer updates per epoch for ``rows`` tiles."""
    return math.floor(rows / (world * batch * accumulate))
