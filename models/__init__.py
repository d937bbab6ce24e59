"""models: DeepLabV3 from torchvision, weight loading, and the batched predictor. No Ray."""

from __future__ import annotations

from models.deeplab import (
    Backbone,
    Init,
    adapt_first_conv,
    build_model,
    enable_grad_checkpointing,
    first_conv,
    load_state_dict,
    pretrained_weights,
)
from models.errors import BandCountError, ModelError, WeightsError
from models.precision import Precision, cpu_has_native_bf16, resolve_precision
from models.predictor import TTA, Normalization, Predictor, check_bands, resolve_device

__all__ = [
    "TTA",
    "Backbone",
    "BandCountError",
    "Init",
    "ModelError",
    "Normalization",
    "Precision",
    "Predictor",
    "WeightsError",
    "adapt_first_conv",
    "build_model",
    "enable_grad_checkpointing",
    "check_bands",
    "cpu_has_native_bf16",
    "first_conv",
    "load_state_dict",
    "pretrained_weights",
    "resolve_device",
    "resolve_precision",
]
