"""The training configuration: one frozen dataclass tree, validated once, every default named.

A YAML file holds the same keys as the flags (``lr: 5e-5`` is ``--lr 5e-5``),
flat; flags given on the command line win over the file. The resolved
config is saved as ``config.yaml`` next to the checkpoints, so
``tilewise train OUT/config.yaml`` repeats a run.

The fine-tuning card of DeepLabV3-ResNet101 sets the defaults and ranges of
the learning rate (5e-5, 1e-5..1e-4), batch size (4, 2..32) and epochs
(1, 1..20); a value outside is refused unless ``force``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from models import Backbone, Init, Precision
from models.train import IGNORE_INDEX, Preset
from tiling.core import window_bounds
from tiling.errors import ConfigError
from tiling.options import lookup_option

__all__ = [
    "CARD",
    "DataConfig",
    "ModelTrainConfig",
    "OptimConfig",
    "RunTrainConfig",
    "TrainConfig",
    "parse_class_weights",
    "parse_label_map",
]

#: The fine-tuning card's ranges: field -> (low, high).
CARD: dict[str, tuple[float, float]] = {"lr": (1e-5, 1e-4), "batch_size": (2, 32), "epochs": (1, 20)}


def parse_label_map(text: str | None, ignore_index: int = IGNORE_INDEX) -> dict[str, int]:
    """``"255:1,0:0"`` -> ``{"255": 1, "0": 0}``; a target ``ignore`` maps to ``ignore_index``.

    Keys stay text: vector attributes may hold words (``yes:1``).

    Raises:
        ConfigError: for an item that is not ``VALUE:CLASS``.
    """
    out: dict[str, int] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.rpartition(":")
        value = value.strip().lower()
        if not sep or not key.strip() or not (value.isdigit() or value == "ignore"):
            raise ConfigError(f"label_map: {item.strip()!r} is not VALUE:CLASS (e.g. 255:1, or 0:ignore)")
        out[key.strip()] = ignore_index if value == "ignore" else int(value)
    return out


def _positive_int(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ConfigError(f"{name}: must be a positive integer, got {v!r}")


def _int(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{name}: must be a whole number, got {v!r}")


def _finite(name: str, v: Any, low: float | None = None, low_open: bool = False) -> float:
    """``v`` as a float, refusing what is no finite number (nan, inf, text) or below ``low``.

    Raises:
        ConfigError: naming the field and the value.
    """
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{name}: must be a finite number, got {v!r}")
    if low is not None and (v <= low if low_open else v < low):
        raise ConfigError(f"{name}: must be {'>' if low_open else '>='} {low:g}, got {v!r}")
    return float(v)


def parse_class_weights(text: str, classes: int) -> tuple[float, ...]:
    """``"1,5"`` -> ``(1.0, 5.0)``: one finite, non-negative weight per class, not all zero.

    Raises:
        ConfigError: for text that is not such numbers, or not one per class.
    """
    try:
        ws = tuple(float(w) for w in str(text).split(","))
    except ValueError:
        raise ConfigError(f"class_weights: expected auto or non-negative numbers like 1,5, got {text!r}") from None
    if not all(math.isfinite(w) and w >= 0 for w in ws) or not any(ws):
        raise ConfigError(f"class_weights: expected finite non-negative numbers, not all 0, like 1,5; got {text!r}")
    if len(ws) != classes:
        raise ConfigError(f"class_weights: {len(ws)} weights for {classes} classes; give one per class")
    return ws


@dataclass(frozen=True)
class DataConfig:
    """Which scenes, which labels, how they become tiles and how they split."""

    image: tuple[str, ...] = ()  # image files, series folders or stores; or one folder of image/mask pairs
    labels: tuple[str, ...] = ()  # one per image: label raster, vector file, DICOM SEG or Zarr labels
    val_image: tuple[str, ...] = ()  # validation scenes for a scene split; else the last scenes are held out
    val_labels: tuple[str, ...] = ()
    classes: int = 2
    class_names: tuple[str, ...] | None = None
    label_map: str | None = None  # raw label -> class, e.g. "255:1"; "0:ignore" drops a value
    ignore_index: int = IGNORE_INDEX  # labels that never count (nodata is always ignored)
    bands: tuple[int, ...] | None = None  # GeoTIFF: 1-based bands to read
    series: str | None = None  # DICOM: SeriesInstanceUID when a folder holds several
    window: str | None = None  # CT intensity window "low,high" or a preset
    resample_labels: bool = False  # labels on another grid: resample nearest onto the image's, else refuse
    label_attribute: str | None = None  # vector labels: the attribute holding the class
    label_name: str | None = None  # OME-Zarr: the label image in the labels group
    all_touched: bool = False  # vector labels: burn every touched pixel (thin roads)
    tile: int = 512  # the card's 520 px, rounded to the 512 px inference tile
    split: str = "block"  # "block": spatial blocks of each scene; "scene": whole scenes held out
    val_fraction: float = 0.2
    block: int | None = None  # side of a split block in pixels; None = 2 tiles
    windows: str = "grid"  # "grid": the same tiles each epoch; "random": fresh offsets each epoch
    samples: int | None = None  # tiles per epoch for random or balanced windows; None = the grid's count
    balanced: bool = False  # draw tiles with weights that even out class frequencies
    # A label file whose classes but its most common one cover less than this share of its labelled pixels
    # is refused: below 1 pixel in 10,000 the labels almost surely miss the image (a wrong CRS); 0: no check
    min_label_share: float = 1e-4

    def validate(self) -> DataConfig:
        """Check the values (not the files).

        Raises:
            ConfigError: naming the first invalid field.
        """
        if not self.image:
            raise ConfigError("image: no training scene given; pass --image (and --labels)")
        if len(self.labels) != len(self.image) and not (len(self.image) == 1 and not self.labels):
            raise ConfigError(f"labels: {len(self.labels)} label sources for {len(self.image)} images; give one each")
        if len(self.val_labels) != len(self.val_image):
            raise ConfigError(f"val_labels: {len(self.val_labels)} for {len(self.val_image)} validation images")
        if isinstance(self.classes, bool) or not isinstance(self.classes, int) or not 2 <= self.classes <= 254:
            raise ConfigError(f"classes: must be between 2 and 254, got {self.classes!r}")
        if self.class_names is not None and len(self.class_names) != self.classes:
            raise ConfigError(f"class_names: {len(self.class_names)} names for {self.classes} classes")
        _int("ignore_index", self.ignore_index)
        if self.label_map is not None and not isinstance(self.label_map, str):
            raise ConfigError(f"label_map: expected text like '255:1,0:ignore', got {self.label_map!r}")
        if not 0 <= self.ignore_index <= 255 or self.ignore_index < self.classes:
            raise ConfigError(f"ignore_index: must be in [classes, 255], got {self.ignore_index}")
        _positive_int("tile", self.tile)
        if self.split not in ("block", "scene"):
            raise ConfigError(f"split: {self.split!r} is not one of block, scene")
        if self.windows not in ("grid", "random"):
            raise ConfigError(f"windows: {self.windows!r} is not one of grid, random")
        if not 0 < _finite("val_fraction", self.val_fraction) < 1:
            raise ConfigError(f"val_fraction: must be in (0, 1), got {self.val_fraction!r}")
        if not 0 <= _finite("min_label_share", self.min_label_share) < 1:
            raise ConfigError(f"min_label_share: must be in [0, 1), got {self.min_label_share!r}")
        if self.block is not None:
            _positive_int("block", self.block)
            if self.block < self.tile:
                raise ConfigError(
                    f"block: {self.block} px is smaller than the tile ({self.tile} px): tiles would cross "
                    "blocks, so validation pixels would be in training tiles; use a block of at least one tile"
                )
        if self.samples is not None:
            _positive_int("samples", self.samples)
        if self.window is not None:
            window_bounds(self.window)
        for k, v in parse_label_map(self.label_map, self.ignore_index).items():
            if v != self.ignore_index and not 0 <= v < self.classes:
                raise ConfigError(f"label_map: {k}:{v} maps to no class; classes are 0 to {self.classes - 1}")
        overlap = set(self.image) & set(self.val_image)
        if overlap:
            raise ConfigError(
                f"val_image: {sorted(overlap)[0]} is also a training scene, so validation pixels would be "
                "in training tiles; hold out another scene, or use --split block"
            )
        return self

    @property
    def names(self) -> list[str]:
        """Class names, ``class_0`` ... where none were given."""
        return list(self.class_names or (f"class_{k}" for k in range(self.classes)))

    @property
    def block_size(self) -> int:
        """The split block's side in pixels."""
        return self.block or 2 * self.tile


@dataclass(frozen=True)
class ModelTrainConfig:
    """The network and where it starts."""

    backbone: Backbone | str = Backbone.RESNET101
    init: str = Init.COCO.value  # coco | imagenet | none | PATH of a checkpoint
    download: bool = False  # fetch --init weights into torch's cache when missing (needs the internet)
    # bf16 only where the hardware computes it natively: emulated bf16 is ~4x slower than fp32
    precision: Precision | str = Precision.AUTO
    grad_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% more time
    # BatchNorm's running statistics lag far behind fast-changing weights in short runs;
    # re-estimate them over this many of each epoch's last training batches (0: keep them)
    precise_bn: int = 8

    def validate(self) -> ModelTrainConfig:
        """A copy with options resolved to enums.

        Raises:
            ConfigError: naming the first invalid field.
        """
        _int("precise_bn", self.precise_bn)
        if self.precise_bn < 0:
            raise ConfigError(f"precise_bn: must be 0 (off) or a number of batches, got {self.precise_bn!r}")
        return replace(
            self, backbone=lookup_option(self.backbone, Backbone, "backbone"),
            precision=lookup_option(self.precision, Precision, "precision"),
        )  # fmt: skip


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with a polynomial (DeepLab "poly") learning-rate decay, per the fine-tuning card."""

    lr: float = 5e-5  # card: 5e-5, range 1e-5..1e-4
    batch_size: int = 4  # per worker; card: 4, range 2..32
    epochs: int = 1  # card: 1, range 1..20
    accumulate: int = 1  # micro-batches per update: the effective batch is batch_size * accumulate * workers
    weight_decay: float = 1e-4
    class_weights: str | None = None  # "auto" (inverse square-root frequency) or "1,5": rare classes count more
    force: bool = False  # accept values outside the card's ranges

    def validate(self) -> OptimConfig:
        """Check the values against the card.

        Class weights are checked against the class count by :meth:`TrainConfig.validate`.

        Raises:
            ConfigError: for a value outside the card's range (unless ``force``), not positive, or not finite.
        """
        _positive_int("batch_size", self.batch_size)
        _positive_int("epochs", self.epochs)
        _positive_int("accumulate", self.accumulate)
        _finite("lr", self.lr, 0, low_open=True)  # an infinite or NaN rate trains a NaN model, even with force
        _finite("weight_decay", self.weight_decay, 0)
        if not self.force:
            for name, (low, high) in CARD.items():
                v = getattr(self, name)
                if not low <= v <= high:
                    raise ConfigError(
                        f"{name}: {v:g} is outside the fine-tuning card's range {low:g}..{high:g}; "
                        "pass --force to train with it anyway"
                    )
        return self


@dataclass(frozen=True)
class RunTrainConfig:
    """Where the run writes, on how many workers, and how it is repeated."""

    out: str = "tilewise-train"  # checkpoints, config.yaml, metrics.json, plots, model.pt
    num_workers: int = 1  # DDP workers (processes); one per GPU with use_gpu
    use_gpu: bool = False  # NCCL on GPUs; gloo on CPUs otherwise
    cpus_per_worker: float | None = None  # None: share the CPUs, keeping one for Ray Data's reads
    resume: str | None = None  # a checkpoint.pt (or the folder holding one) to continue from
    stop_after: int | None = None  # stop after this many epochs in all, keeping the schedule of `epochs`
    seed: int = 0
    augment: str = Preset.REMOTE_SENSING.value  # remote-sensing | ct | none
    augment_custom: tuple[dict[str, Any], ...] = ()  # albumentations transforms: [{name: ..., p: ...}]
    address: str | None = None  # Ray cluster; None = a local Ray
    num_cpus: int | None = None  # CPUs of the local Ray

    def validate(self) -> RunTrainConfig:
        """Check the values.

        Raises:
            ConfigError: naming the first invalid field.
        """
        _positive_int("num_workers", self.num_workers)
        if self.stop_after is not None:
            _positive_int("stop_after", self.stop_after)
        if self.num_cpus is not None:
            _positive_int("num_cpus", self.num_cpus)  # a Ray of 0 CPUs would wait for a worker forever
        if self.cpus_per_worker is not None:
            _finite("cpus_per_worker", self.cpus_per_worker, 0, low_open=True)
        _int("seed", self.seed)
        if self.augment not in [p.value for p in Preset]:
            raise ConfigError(f"augment: {self.augment!r} is not one of {', '.join(p.value for p in Preset)}")
        return self


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelTrainConfig = field(default_factory=ModelTrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunTrainConfig = field(default_factory=RunTrainConfig)

    def validate(self) -> TrainConfig:
        """A copy with every section checked and options resolved.

        Raises:
            ConfigError: naming the first invalid field.
        """
        checked = replace(
            self, data=self.data.validate(), model=self.model.validate(), optim=self.optim.validate(),
            run=self.run.validate(),
        )  # fmt: skip
        if checked.optim.class_weights not in (None, "auto"):
            parse_class_weights(checked.optim.class_weights, checked.data.classes)
        return checked

    def to_flat(self) -> dict[str, Any]:
        """The config as flat YAML keys (the flags' names), enums by value."""
        out: dict[str, Any] = {}
        for section in fields(self):
            for k, v in asdict(getattr(self, section.name)).items():
                v = v.value if hasattr(v, "value") else v
                out[k] = list(v) if isinstance(v, tuple) else v
        return out
