"""Training pieces in torch (no Ray): loss, metrics, the step, augmentation, checkpoints, export."""

from __future__ import annotations

from models.train.augment import Preset, augment, build_augmentation
from models.train.checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state, unwrap
from models.train.export import EXPORT_KEY, ExportInfo, export_model, read_export
from models.train.losses import IGNORE_INDEX, segmentation_loss
from models.train.metrics import ConfusionMatrix
from models.train.step import (
    OOM_HINT,
    autocast,
    evaluate_batch,
    forward,
    out_of_memory,
    recalibrate_batchnorm,
    train_step,
)

__all__ = [
    "EXPORT_KEY",
    "IGNORE_INDEX",
    "OOM_HINT",
    "ConfusionMatrix",
    "ExportInfo",
    "Preset",
    "augment",
    "autocast",
    "build_augmentation",
    "evaluate_batch",
    "export_model",
    "forward",
    "get_rng_state",
    "load_checkpoint",
    "out_of_memory",
    "read_export",
    "recalibrate_batchnorm",
    "save_checkpoint",
    "segmentation_loss",
    "set_rng_state",
    "train_step",
    "unwrap",
]
