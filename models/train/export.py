"""The exported model: weights plus everything inference must repeat from training.

``tilewise infer --weights W`` reads the metadata back (:func:`read_export`)
and uses its classes, class names, bands and per-band normalisation instead
of estimating statistics from each scene, which would shift inputs away from
what the model learned.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from models.deeplab import read_torch_file
from models.errors import WeightsError
from models.train.checkpoint import is_checkpoint, save_atomically, unwrap

__all__ = ["EXPORT_KEY", "ExportInfo", "export_model", "read_export", "written_by_tilewise"]

#: The key under which an export file carries its metadata, next to "model".
EXPORT_KEY = "tilewise"


@dataclass(frozen=True)
class ExportInfo:
    """What a model was trained on.

    Attributes:
        backbone: ``resnet101``, ``resnet50`` or ``mobilenet_v3_large``.
        classes: number of output classes K.
        class_names: one name per class.
        in_channels: model input channels.
        bands: 1-based source bands read in training, or None for all.
        label_map: how raw label values became classes (raw value as text -> class).
        mean: per-channel mean subtracted in training.
        std: per-channel standard deviation divided by in training.
        ignore_index: the label that counted nowhere.
        tile: the training tile size in pixels (a sensible inference tile).
        extra: anything else (the training config, figures).
    """

    backbone: str
    classes: int
    class_names: tuple[str, ...]
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    bands: tuple[int, ...] | None = None
    label_map: dict[str, int] = field(default_factory=dict)
    ignore_index: int = 255
    tile: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, not tuples) that ``torch.load(weights_only=True)`` reads back."""
        d = asdict(self)
        for k in ("class_names", "mean", "std", "bands"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExportInfo:
        """The inverse of :meth:`to_dict`, ignoring keys a newer version added."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in ("class_names", "mean", "std", "bands"):
            if known.get(k) is not None:
                known[k] = tuple(known[k])
        return cls(**known)


def export_model(path: str | Path, model: nn.Module, info: ExportInfo) -> Path:
    """Write ``{"model": state_dict, "tilewise": info}`` atomically; returns the path."""
    path = Path(path)
    save_atomically({"model": unwrap(model).state_dict(), EXPORT_KEY: info.to_dict()}, path)
    return path


def written_by_tilewise(path: str | Path) -> bool:
    """Whether ``path`` is an export or a training checkpoint tilewise wrote (mapped, not read whole)."""
    try:
        obj = read_torch_file(Path(path), mmap=True)
    except WeightsError:
        return False
    return isinstance(obj, dict) and (isinstance(obj.get(EXPORT_KEY), dict) or is_checkpoint(obj))


def read_export(path: str | Path) -> ExportInfo | None:
    """The metadata of an export file, or None for a plain checkpoint (torchvision's, say).

    Raises:
        WeightsError: if the file is missing or not a torch checkpoint.
    """
    obj = read_torch_file(Path(path), mmap=True)  # only the metadata is read
    meta = obj.get(EXPORT_KEY) if isinstance(obj, dict) else None
    return ExportInfo.from_dict(meta) if isinstance(meta, dict) else None
