"""models: DeepLabV3 from torchvision, weight loading, and the batched predictor. No Ray.

Names are imported on first use: the option enums and ``Normalization``
(``models.spec``) need no torch, so the CLI can parse its flags and start
Ray before torch and torchvision are imported (seconds), and a model actor
that runs a model it was handed imports torchvision only if that model is
one of torchvision's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from models.lazy import lazy_getattr

if TYPE_CHECKING:
    from models.deeplab import (
        adapt_first_conv,
        build_model,
        check_weights,
        enable_grad_checkpointing,
        first_conv,
        load_state_dict,
        pretrained_weights,
    )
    from models.errors import BandCountError, ModelError, WeightsError
    from models.precision import cpu_has_native_bf16, resolve_precision
    from models.predictor import Predictor, check_bands, resolve_device
    from models.spec import TTA, Backbone, Init, Normalization, Precision


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
    "check_bands",
    "check_weights",
    "cpu_has_native_bf16",
    "enable_grad_checkpointing",
    "first_conv",
    "load_state_dict",
    "pretrained_weights",
    "resolve_device",
    "resolve_precision",
]


if not TYPE_CHECKING:  # mypy sees only the names imported above, so a wrong name fails the type check
    __getattr__ = lazy_getattr(
        __name__,
        {
            "models.spec": ["TTA", "Backbone", "Init", "Normalization", "Precision"],
            "models.errors": ["BandCountError", "ModelError", "WeightsError"],
            "models.precision": ["cpu_has_native_bf16", "resolve_precision"],
            "models.predictor": ["Predictor", "check_bands", "resolve_device"],
            "models.deeplab": [
                "adapt_first_conv",
                "build_model",
                "check_weights",
                "enable_grad_checkpointing",
                "first_conv",
                "load_state_dict",
                "pretrained_weights",
            ],
        },
    )
