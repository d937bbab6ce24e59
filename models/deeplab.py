"""DeepLabV3 (ResNet-101 or ResNet-50) from torchvision, adapted to K classes and C bands.

Weights come only from local files (``weights_only=True``): a torchvision
DeepLabV3 checkpoint, a plain torchvision ResNet checkpoint for the backbone,
or a checkpoint tilewise wrote. Without weights the model is randomly
initialised; nothing is downloaded.
"""

from __future__ import annotations

import logging
import pickle
from enum import Enum
from pathlib import Path

import torch
from torch import nn
from torchvision.models.segmentation import deeplabv3_resnet50, deeplabv3_resnet101

from models.errors import BandCountError, ModelError, WeightsError

__all__ = ["Backbone", "adapt_first_conv", "build_model", "first_conv", "load_state_dict"]

log = logging.getLogger(__name__)

#: Prefixes that wrappers (DDP, Lightning, our own checkpoints) put on keys.
_PREFIXES = ("module.", "model.")


class Backbone(str, Enum):
    """The ResNet depth under DeepLabV3."""

    RESNET101 = "resnet101"
    RESNET50 = "resnet50"

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


_BUILDERS = {Backbone.RESNET101: deeplabv3_resnet101, Backbone.RESNET50: deeplabv3_resnet50}


def first_conv(model: nn.Module) -> nn.Conv2d | None:
    """The model's first 2-D convolution (where input bands enter), if any."""
    return next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict from ``path`` safely (``weights_only=True``) and strip wrapper prefixes.

    Accepts a bare state dict or one under a ``"model"``/``"state_dict"`` key.

    Raises:
        WeightsError: if the file is missing, not a torch checkpoint, or not a
            mapping of parameter names (strings) to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path}: not a loadable torch checkpoint ({first})") from e
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: holds no state dict of tensors")
    odd = next((k for k in obj if not isinstance(k, str)), None)
    if odd is not None:
        raise WeightsError(
            f"{path}: key {odd!r} is a {type(odd).__name__}, not a parameter name; a state dict maps names to tensors"
        )
    out = {}
    for k, v in obj.items():
        for p in _PREFIXES:
            if k.startswith(p):
                k = k[len(p) :]
        out[k] = v
    return out


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Turn an RGB first-conv kernel (out, 3, k, k) into one for ``in_channels`` bands.

    With 3 or more bands the RGB filters are kept unchanged for the first
    three and extra bands start at zero, so the pretrained response to RGB is
    exactly preserved until fine-tuning learns the rest. One band gets the sum
    of the RGB filters (a grey image then gives the RGB response); two bands
    get the first two filters scaled by 3/2.
    """
    out, cin, kh, kw = weight.shape
    if cin != 3:
        raise ValueError(f"expected an RGB kernel, got {cin} input channels")
    new = torch.zeros(out, in_channels, kh, kw, dtype=weight.dtype)
    if in_channels >= 3:
        new[:, :3] = weight
    elif in_channels == 1:
        new[:, 0] = weight.sum(dim=1)
    else:
        new[:, :2] = weight[:, :2] * 1.5
    return new


def _fit_checkpoint(
    sd: dict[str, torch.Tensor], classes: int, in_channels: int, path: Path
) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """Rename, drop and adapt checkpoint entries.

    Returns the state dict and the key prefixes that may stay randomly
    initialised (the head, or the whole classifier for a backbone checkpoint).
    """
    reinit: tuple[str, ...] = ()
    if "conv1.weight" in sd and "backbone.conv1.weight" not in sd:  # a plain ResNet checkpoint
        sd = {f"backbone.{k}": v for k, v in sd.items() if not k.startswith("fc.")}
        reinit = ("classifier.",)
        log.info("%s: backbone weights only; the segmentation head starts fresh", path)
    sd = {k: v for k, v in sd.items() if not k.startswith("aux_classifier.")}
    for key in ("classifier.4.weight", "backbone.conv1.weight"):
        if key in sd and sd[key].ndim != 4:
            raise WeightsError(
                f"{path}: tensor {key} has shape {tuple(sd[key].shape)}, but a convolution kernel has 4 axes "
                "(out, in, height, width); the checkpoint is for another architecture or was damaged"
            )
    head = sd.get("classifier.4.weight")
    if head is not None and head.shape[0] != classes:
        log.info("%s: head has %d classes, model %d; the last layer starts fresh", path, head.shape[0], classes)
        sd = {k: v for k, v in sd.items() if not k.startswith("classifier.4.")}
        reinit += ("classifier.4.",)
    conv = sd.get("backbone.conv1.weight")
    if conv is None:
        raise WeightsError(f"{path}: has no backbone.conv1.weight; not a DeepLabV3/ResNet checkpoint")
    if conv.shape[1] != in_channels:
        if conv.shape[1] != 3:
            raise BandCountError(
                f"{path}: the model was trained on {conv.shape[1]} input bands, the image has "
                f"{in_channels}; choose {conv.shape[1]} bands with --bands"
            )
        sd["backbone.conv1.weight"] = adapt_first_conv(conv, in_channels)
    return sd, reinit


def _check_shapes(model: nn.Module, sd: dict[str, torch.Tensor], path: Path, name: str) -> None:
    """Refuse a checkpoint tensor whose shape differs from the model's parameter of that name.

    ``load_state_dict`` would raise too, with one line per mismatch inside a
    long traceback; this names the first one.

    Raises:
        WeightsError: naming the file, the tensor, the expected and the found shape.
    """
    expected = model.state_dict()
    bad = [k for k, v in sd.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if bad:
        k = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise WeightsError(
            f"{path}: tensor {k} has shape {tuple(sd[k].shape)}, {name} expects {tuple(expected[k].shape)}{more}; "
            "the checkpoint is for another architecture or was damaged"
        )


def build_model(
    backbone: Backbone | str = Backbone.RESNET101,
    classes: int = 2,
    in_channels: int = 3,
    weights: str | Path | None = None,
) -> nn.Module:
    """DeepLabV3 with ``classes`` outputs and ``in_channels`` input bands, in eval mode.

    Args:
        backbone: ``resnet101`` (default) or ``resnet50``.
        classes: number of output classes K.
        in_channels: number of input bands C.
        weights: a local checkpoint; random initialisation when None.

    Raises:
        WeightsError: if the checkpoint cannot be read or does not fit the backbone.
        BandCountError: if the checkpoint was trained on a band count that is
            neither C nor RGB.
    """
    if classes < 1 or in_channels < 1:
        raise ModelError(f"classes and bands must be positive, got {classes} and {in_channels}")
    try:
        backbone = Backbone(str(backbone).lower())
    except ValueError:
        choices = ", ".join(b.value for b in Backbone)
        raise ModelError(f"backbone: {backbone!r} is not one of {choices}") from None
    model = _BUILDERS[backbone](weights=None, weights_backbone=None, num_classes=classes, aux_loss=False)
    if in_channels != 3:
        model.backbone.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if weights is not None:
        path = Path(weights)
        sd, reinit = _fit_checkpoint(load_state_dict(path), classes, in_channels, path)
        _check_shapes(model, sd, path, f"deeplabv3_{backbone}")
        result = model.load_state_dict(sd, strict=False)
        missing = {k for k in result.missing_keys if not k.startswith(reinit)}
        if missing or result.unexpected_keys:
            bad = sorted(missing)[:3] or sorted(result.unexpected_keys)[:3]
            raise WeightsError(
                f"{path}: does not fit deeplabv3_{backbone} ({len(missing)} missing, "
                f"{len(result.unexpected_keys)} unexpected keys, e.g. {', '.join(bad)}); "
                "is it for the other backbone?"
            )
        log.info("loaded weights from %s", path)
    return model.eval()
