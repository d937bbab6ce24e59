"""Plain data about models, without torch: the option enums and the input normalisation.

Importing torch and torchvision takes seconds. The CLI reads its choices
from here, so ``tilewise`` can start Ray before it imports them, and Ray's
read tasks never import them at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from models.errors import ModelError

__all__ = ["IGNORE_INDEX", "TTA", "Backbone", "Init", "Normalization", "Precision"]

#: Label of pixels that count in neither the loss nor the metrics: nodata,
#: padding, values the label map drops. The same value as the masks' nodata.
IGNORE_INDEX = 255


class Backbone(str, Enum):
    """The ResNet depth under DeepLabV3."""

    RESNET101 = "resnet101"
    RESNET50 = "resnet50"
    # about 11M parameters and ~15x cheaper than ResNet-50 per step: what a 2-core demo can train
    MOBILENET_V3_LARGE = "mobilenet_v3_large"

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


class Init(str, Enum):
    """Where training starts: torchvision's published weights, or random initialisation."""

    COCO = "coco"  # DeepLabV3 trained on a COCO subset with the 20 VOC classes
    IMAGENET = "imagenet"  # the backbone's ImageNet classification weights; a fresh head
    NONE = "none"

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


class Precision(str, Enum):
    """Numeric precision of the forward pass."""

    AUTO = "auto"  # bf16 where the hardware has it natively, else fp16 on CUDA, fp32 on CPU
    FP32 = "fp32"
    BF16 = "bf16"  # autocast to bfloat16: ~2.5x faster than fp32 on CPUs with AVX-512 BF16 or AMX
    FP16 = "fp16"  # autocast to float16: CUDA only

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


class TTA(str, Enum):
    """Test-time augmentation: which transforms of a tile the class probabilities are averaged over."""

    NONE = "none"  # one forward pass
    FLIPS = "flips"  # identity, left-right, up-down and both (ttach's flip_transform): 4 forward passes

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


@dataclass(frozen=True)
class Normalization:
    """Per-band ``(x - mean) / std``; one value per input band."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std):
            raise ModelError(f"normalisation has {len(self.mean)} means but {len(self.std)} stds")
        if any(s <= 0 for s in self.std):
            raise ModelError(f"normalisation stds must be positive, got {self.std}")
