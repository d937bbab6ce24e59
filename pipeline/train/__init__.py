"""Fine-tuning on Ray Train: tiles + labels through Ray Data, DDP with TorchTrainer.

Names are imported on first use, so reading a training config (the CLI's
flag table does) does not import Ray Train and torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from models.lazy import lazy_getattr

if TYPE_CHECKING:
    from pipeline.train.config import DataConfig, ModelTrainConfig, OptimConfig, RunTrainConfig, TrainConfig
    from pipeline.train.run import TrainResult, train


__all__ = [
    "DataConfig",
    "ModelTrainConfig",
    "OptimConfig",
    "RunTrainConfig",
    "TrainConfig",
    "TrainResult",
    "train",
]


if not TYPE_CHECKING:  # mypy sees only the names imported above, so a wrong name fails the type check
    __getattr__ = lazy_getattr(
        __name__,
        {
            "pipeline.train.config": ["DataConfig", "ModelTrainConfig", "OptimConfig", "RunTrainConfig", "TrainConfig"],
            "pipeline.train.run": ["TrainResult", "train"],
        },
    )
