"""Fine-tuning on Ray Train: tiles + labels through Ray Data, DDP with TorchTrainer.

Names are imported on first use, so reading a training config (the CLI's
flag table does) does not import Ray Train and torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.train.config import DataConfig, ModelTrainConfig, OptimConfig, RunTrainConfig, TrainConfig
    from pipeline.train.run import TrainResult, train

_HOME = {
    **dict.fromkeys(
        ["DataConfig", "ModelTrainConfig", "OptimConfig", "RunTrainConfig", "TrainConfig"], "pipeline.train.config"
    ),
    **dict.fromkeys(["TrainResult", "train"], "pipeline.train.run"),
}

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

    def __getattr__(name: str) -> Any:
        home = _HOME.get(name)
        if home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        return getattr(importlib.import_module(home), name)
