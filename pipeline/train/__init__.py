"""Fine-tuning on Ray Train: tiles + labels through Ray Data, DDP with TorchTrainer."""

from __future__ import annotations

from pipeline.train.config import DataConfig, ModelTrainConfig, OptimConfig, RunTrainConfig, TrainConfig
from pipeline.train.run import TrainResult, train

__all__ = ["DataConfig", "ModelTrainConfig", "OptimConfig", "RunTrainConfig", "TrainConfig", "TrainResult", "train"]
