"""Training pieces in torch (no Ray): loss, metrics, the step, augmentation, checkpoints, export.

Names are imported on first use, so the CLI's flag table and the training
config read ``Preset`` and ``IGNORE_INDEX`` without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from models.lazy import lazy_getattr

# Imported now (numpy only; albumentations loads when a transform is built): the function
# ``augment`` shares its name with its module, and a lazy name would lose to the module.
from models.train.augment import Preset, augment, build_augmentation

if TYPE_CHECKING:
    from models.spec import IGNORE_INDEX
    from models.train.checkpoint import (
        get_rng_state,
        load_checkpoint,
        save_atomically,
        save_checkpoint,
        set_rng_state,
        temp_path,
        unwrap,
    )
    from models.train.export import EXPORT_KEY, ExportInfo, export_model, read_export, written_by_tilewise
    from models.train.losses import segmentation_loss
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
    "save_atomically",
    "save_checkpoint",
    "segmentation_loss",
    "set_rng_state",
    "temp_path",
    "train_step",
    "unwrap",
    "written_by_tilewise",
]


if not TYPE_CHECKING:  # mypy sees only the names imported above, so a wrong name fails the type check
    __getattr__ = lazy_getattr(
        __name__,
        {
            "models.spec": ["IGNORE_INDEX"],
            "models.train.checkpoint": [
                "get_rng_state",
                "load_checkpoint",
                "save_atomically",
                "save_checkpoint",
                "set_rng_state",
                "temp_path",
                "unwrap",
            ],
            "models.train.export": ["EXPORT_KEY", "ExportInfo", "export_model", "read_export", "written_by_tilewise"],
            "models.train.losses": ["segmentation_loss"],
            "models.train.metrics": ["ConfusionMatrix"],
            "models.train.step": [
                "OOM_HINT",
                "autocast",
                "evaluate_batch",
                "forward",
                "out_of_memory",
                "recalibrate_batchnorm",
                "train_step",
            ],
        },
    )
