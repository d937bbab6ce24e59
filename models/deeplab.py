"""DeepLabV3 (ResNet-101, ResNet-50 or MobileNetV3-Large) from torchvision, adapted to K classes and C bands.

Weights come only from local files (``weights_only=True``): a torchvision
DeepLabV3 checkpoint, a plain torchvision backbone checkpoint, or a
checkpoint tilewise wrote. Without weights the model is randomly
initialised. Training's ``--init coco|imagenet`` finds torchvision's
published weights in torch's cache (:func:`pretrained_weights`) and
downloads them only when asked to.
"""

from __future__ import annotations

import functools
import logging
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from models.errors import BandCountError, ModelError, WeightsError
from models.spec import Backbone, Init

__all__ = [
    "Backbone",
    "Init",
    "adapt_first_conv",
    "build_model",
    "check_weights",
    "enable_grad_checkpointing",
    "first_conv",
    "load_state_dict",
    "pretrained_weights",
]

log = logging.getLogger(__name__)

#: Prefixes that wrappers (DDP, Lightning, our own checkpoints) put on keys.
_PREFIXES = ("module.", "model.")


# torchvision is imported where a DeepLabV3 is built, not with this module: importing it
# takes seconds (it pulls in torch._dynamo), which every process that only runs a model
# it was handed (a model actor, a read task, a test's tiny model) would pay for nothing.


def _builder(backbone: Backbone) -> Callable[..., nn.Module]:
    """The DeepLabV3 constructor of torchvision for ``backbone``."""
    from torchvision.models import segmentation

    return {
        Backbone.RESNET101: segmentation.deeplabv3_resnet101,
        Backbone.RESNET50: segmentation.deeplabv3_resnet50,
        Backbone.MOBILENET_V3_LARGE: segmentation.deeplabv3_mobilenet_v3_large,
    }[backbone]


@functools.cache
def _published(init: Init, backbone: Backbone) -> Any:
    """The weights torchvision publishes (a ``WeightsEnum`` member) for a starting point and backbone."""
    from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights, ResNet101_Weights, segmentation

    return {
        (Init.COCO, Backbone.RESNET101): segmentation.DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1,
        (Init.COCO, Backbone.RESNET50): segmentation.DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1,
        (Init.COCO, Backbone.MOBILENET_V3_LARGE): (
            segmentation.DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1
        ),
        (Init.IMAGENET, Backbone.RESNET101): ResNet101_Weights.IMAGENET1K_V1,
        (Init.IMAGENET, Backbone.RESNET50): ResNet50_Weights.IMAGENET1K_V1,
        (Init.IMAGENET, Backbone.MOBILENET_V3_LARGE): MobileNet_V3_Large_Weights.IMAGENET1K_V1,
    }[(init, backbone)]


#: State-dict key of the first convolution (where bands enter) per backbone.
_FIRST_CONV = {
    Backbone.RESNET101: "backbone.conv1.weight",
    Backbone.RESNET50: "backbone.conv1.weight",
    Backbone.MOBILENET_V3_LARGE: "backbone.0.0.weight",
}


def _backbone(backbone: Backbone | str) -> Backbone:
    try:
        return Backbone(str(backbone).lower())
    except ValueError:
        choices = ", ".join(b.value for b in Backbone)
        raise ModelError(f"backbone: {backbone!r} is not one of {choices}") from None


def pretrained_weights(init: Init | str, backbone: Backbone | str, download: bool = False) -> Path:
    """The local file of torchvision's published weights for ``init`` and ``backbone``.

    Looks in torch's hub cache (``$TORCH_HOME/hub/checkpoints``, where
    torchvision itself keeps them); downloads there only when ``download``.

    Raises:
        WeightsError: when the file is not cached and may not or cannot be
            downloaded; the message names the file, the folder and the URL.
    """
    init, backbone = Init(str(init).lower()), _backbone(backbone)
    if init is Init.NONE:
        raise ModelError("init none has no weights file")
    url = _published(init, backbone).url
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / url.rsplit("/", 1)[-1]
    if path.is_file():
        return path
    where = f"put {path.name} (from {url}) in {folder}"
    if not download:
        raise WeightsError(f"--init {init}: {path.name} is not in torch's cache; {where}, or allow downloads")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=True)
    except (OSError, ValueError) as e:  # URLError is an OSError
        raise WeightsError(f"--init {init}: cannot download {url} ({e}); offline, {where}") from e
    return path


def enable_grad_checkpointing(model: nn.Module) -> nn.Module:
    """Recompute the backbone stages' activations in the backward pass instead of storing them.

    Trades about a third more compute for much less activation memory (the
    fine-tuning card's remedy for running out of memory). The stages'
    ``forward`` is wrapped in place, so state-dict keys do not change.
    """
    body = getattr(model, "backbone", model)
    stages = [getattr(body, n) for n in ("layer1", "layer2", "layer3", "layer4") if hasattr(body, n)]
    if not stages:  # MobileNetV3: numbered blocks
        stages = [m for n, m in body.named_children() if n.isdigit()]
    for stage in stages:
        inner = stage.forward

        def run(*args: Any, _inner: Callable[..., Any] = inner, _stage: nn.Module = stage) -> Any:
            if _stage.training and torch.is_grad_enabled():
                return checkpoint(_inner, *args, use_reentrant=False)
            return _inner(*args)

        stage.forward = run
    return model


def first_conv(model: nn.Module) -> nn.Conv2d | None:
    """The model's first 2-D convolution (where input bands enter), if any."""
    return next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)


def read_torch_file(
    path: Path, missing: str = "weights file not found", kind: str = "torch checkpoint", mmap: bool = False
) -> Any:
    """Whatever ``torch.save`` wrote at ``path``, loaded safely (``weights_only=True``) on the CPU.

    ``mmap`` maps the file instead of reading it: what is only looked at
    (an export's metadata, a check of the tensors' names and shapes) then
    costs no copy of the weights. Files in torch's legacy format are read.

    Raises:
        WeightsError: ``"{path}: {missing}"`` if there is no file, or naming the
            first line of torch's error if it is no loadable ``kind``.
    """
    if not path.is_file():
        raise WeightsError(f"{path}: {missing}")
    try:
        if mmap and zipfile.is_zipfile(path):  # torch maps only its zip format
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path}: not a loadable {kind} ({first})") from e


def load_state_dict(path: str | Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Load a state dict from ``path`` safely (``weights_only=True``) and strip wrapper prefixes.

    Accepts a bare state dict or one under a ``"model"``/``"state_dict"`` key.
    ``mmap``: map the file rather than read it (see :func:`read_torch_file`).

    Raises:
        WeightsError: if the file is missing, not a torch checkpoint, or not a
            mapping of parameter names (strings) to tensors.
    """
    path = Path(path)
    obj = read_torch_file(path, mmap=mmap)
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
    sd: dict[str, torch.Tensor], classes: int, in_channels: int, path: Path, backbone: Backbone = Backbone.RESNET101
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
    elif "features.0.0.weight" in sd and "backbone.0.0.weight" not in sd:  # a plain MobileNetV3 checkpoint
        sd = {f"backbone.{k[len('features.') :]}": v for k, v in sd.items() if k.startswith("features.")}
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
    key = _FIRST_CONV[backbone]
    conv = sd.get(key)
    if conv is None:
        raise WeightsError(f"{path}: has no {key}; not a DeepLabV3 {backbone} checkpoint")
    if conv.shape[1] != in_channels:
        if conv.shape[1] != 3:
            raise BandCountError(
                f"{path}: the model was trained on {conv.shape[1]} input bands, the image has "
                f"{in_channels}; choose {conv.shape[1]} bands with --bands"
            )
        sd[key] = adapt_first_conv(conv, in_channels)
    return sd, reinit


def _check_fit(
    expected: dict[str, torch.Tensor], sd: dict[str, torch.Tensor], reinit: tuple[str, ...], path: Path, name: str
) -> None:
    """Refuse a checkpoint whose tensors do not match the model's state dict ``expected`` by shape and name.

    ``load_state_dict`` would raise too, with one line per mismatch inside a
    long traceback; this names the first one. Keys under ``reinit`` may be missing.

    Raises:
        WeightsError: naming the file and the first tensor of another shape, or the keys that do not fit.
    """
    bad = [k for k, v in sd.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if bad:
        k = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise WeightsError(
            f"{path}: tensor {k} has shape {tuple(sd[k].shape)}, {name} expects {tuple(expected[k].shape)}{more}; "
            "the checkpoint is for another architecture or was damaged"
        )
    missing = sorted(k for k in expected if k not in sd and not k.startswith(reinit))
    unexpected = sorted(k for k in sd if k not in expected)
    if missing or unexpected:
        some = missing[:3] or unexpected[:3]
        raise WeightsError(
            f"{path}: does not fit {name} ({len(missing)} missing, {len(unexpected)} unexpected keys, "
            f"e.g. {', '.join(some)}); is it for the other backbone?"
        )


def _replace_first_conv(model: nn.Module, backbone: Backbone, in_channels: int) -> None:
    """Give the model a first convolution that takes ``in_channels`` bands."""
    body: Any = model.backbone
    if backbone is Backbone.MOBILENET_V3_LARGE:
        old = body["0"][0]
        body["0"][0] = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
    else:
        body.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)


def _skeleton(backbone: Backbone, classes: int, in_channels: int) -> nn.Module:
    """Torchvision's DeepLabV3 for ``backbone`` with ``classes`` outputs and ``in_channels`` bands, freshly initialised."""
    model = _builder(backbone)(weights=None, weights_backbone=None, num_classes=classes, aux_loss=False)
    if in_channels != 3:
        _replace_first_conv(model, backbone, in_channels)
    return model


def _seeded_skeleton(backbone: Backbone, classes: int, in_channels: int, seed: int) -> nn.Module:
    """:func:`_skeleton` initialised from ``seed``, leaving torch's global random state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _skeleton(backbone, classes, in_channels)


def _checked(backbone: Backbone | str, classes: int, in_channels: int) -> Backbone:
    """The backbone, once the class and band counts are known to be positive."""
    if classes < 1 or in_channels < 1:
        raise ModelError(f"classes and bands must be positive, got {classes} and {in_channels}")
    return _backbone(backbone)


def _fitted_weights(
    backbone: Backbone, classes: int, in_channels: int, weights: str | Path, mmap: bool = False
) -> tuple[nn.Module, dict[str, torch.Tensor], tuple[str, ...]]:
    """Check that a checkpoint fits the model, on a model of the meta device (no memory, no initialisation).

    Returns the meta model, the checkpoint's state dict (adapted to the model)
    and the key prefixes that start fresh.

    Raises:
        WeightsError, BandCountError: as :func:`build_model`.
    """
    path = Path(weights)
    sd, reinit = _fit_checkpoint(load_state_dict(path, mmap), classes, in_channels, path, backbone)
    with torch.device("meta"):  # torchvision's initialisation is a no-op there
        model = _skeleton(backbone, classes, in_channels)
    _check_fit(model.state_dict(), sd, reinit, path, f"deeplabv3_{backbone}")
    return model, sd, reinit


def check_weights(backbone: Backbone | str, classes: int, in_channels: int, weights: str | Path) -> None:
    """Fail as :func:`build_model` would for these weights, without building the model or reading the weights.

    The file is mapped, not read, and the model is laid out on the meta
    device: a driver checks a 240 MB ResNet-101 checkpoint in a tenth of a
    second, before any work, and leaves building to the processes that run it.

    Raises:
        WeightsError, BandCountError: as :func:`build_model`.
    """
    _fitted_weights(_checked(backbone, classes, in_channels), classes, in_channels, weights, mmap=True)


def build_model(
    backbone: Backbone | str = Backbone.RESNET101,
    classes: int = 2,
    in_channels: int = 3,
    weights: str | Path | None = None,
    seed: int = 0,
) -> nn.Module:
    """DeepLabV3 with ``classes`` outputs and ``in_channels`` input bands, in eval mode.

    With weights that cover every parameter the model is not randomly
    initialised first (half a second for ResNet-101): it takes the file's
    tensors as they are.

    Args:
        backbone: ``resnet101`` (default), ``resnet50`` or ``mobilenet_v3_large``.
        classes: number of output classes K.
        in_channels: number of input bands C.
        weights: a local checkpoint; random initialisation when None.
        seed: seeds whatever starts fresh (the whole model without ``weights``, or a
            head replaced for another class count), so every process that builds
            the model builds the same one; torch's global random state is left as it was.

    Raises:
        WeightsError: if the checkpoint cannot be read or does not fit the backbone.
        BandCountError: if the checkpoint was trained on a band count that is
            neither C nor RGB.
    """
    backbone = _checked(backbone, classes, in_channels)
    if weights is None:
        return _seeded_skeleton(backbone, classes, in_channels, seed).eval()
    model, sd, reinit = _fitted_weights(backbone, classes, in_channels, weights)
    if reinit:  # a head (or the whole classifier) starts fresh: initialise, then copy the rest in
        model = _seeded_skeleton(backbone, classes, in_channels, seed)
        model.load_state_dict(sd, strict=False)
    else:  # the file's tensors, in each parameter's dtype and plain layout, as copying in would leave them
        expected = model.state_dict()
        model.load_state_dict({k: v.to(expected[k].dtype).contiguous() for k, v in sd.items()}, assign=True)
    log.info("loaded weights from %s", weights)
    return model.eval()
