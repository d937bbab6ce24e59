"""``tilewise train CONFIG.yaml``: fine-tune DeepLabV3 with DDP on Ray Train.

Every key of the YAML file is also a flag (``lr: 5e-5`` is ``--lr 5e-5``);
flags given on the command line win over the file, the file over the
defaults in :mod:`pipeline.train.config`.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import yaml

from models import Backbone, Precision
from pipeline.cli.common import one_line
from pipeline.cli.options import Flag, build_config, config_options
from pipeline.train.config import DataConfig, ModelTrainConfig, OptimConfig, RunTrainConfig, TrainConfig
from tiling.errors import ConfigError

__all__ = ["TRAIN_FLAGS", "TRAIN_SECTIONS", "load_train_config", "train"]

#: A number in exponent form without a dot (``5e-5``), which YAML 1.1 reads as text.
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")

#: How YAML writes "no value": such a key keeps its default.
_NULLS = ("", "~", "null", "Null", "NULL")

#: The training config tree by the section name a flag uses.
TRAIN_SECTIONS: Mapping[str | None, type] = {
    "data": DataConfig,
    "model": ModelTrainConfig,
    "optim": OptimConfig,
    "run": RunTrainConfig,
    None: TrainConfig,
}


def _texts(value: Any) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    return tuple(v.strip() for v in str(value).split(",") if v.strip())


def _ints(value: Any) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in _texts(value))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers like 1,2,3, got {value!r}") from None


def _names(value: Any) -> tuple[str, ...] | None:
    return _texts(value) or None


def _scalar(value: Any) -> Any:
    """A YAML scalar read as text (the config file's loader keeps every scalar text) as its value."""
    if isinstance(value, list):
        return [_scalar(v) for v in value]
    if isinstance(value, dict):
        return {k: _scalar(v) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    try:
        return float(value) if _FLOAT.fullmatch(value) else yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _transforms(value: Any) -> tuple[dict[str, Any], ...]:
    items = yaml.safe_load(value) if isinstance(value, str) else _scalar(value)
    if not items:
        return ()
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ConfigError(f"augment_custom: expected a list like [{{name: HorizontalFlip, p: 0.5}}], got {value!r}")
    return tuple(items)


def _choice(values: list[str]) -> click.Choice[str]:
    return click.Choice(values, case_sensitive=False)


TRAIN_FLAGS: tuple[Flag, ...] = (
    Flag(
        "--image",
        "data",
        "image",
        "Training images, comma-separated (or one folder of images/ + masks/).",
        None,
        _texts,
    ),
    Flag("--labels", "data", "labels", "Their labels, one per image: raster, vector, DICOM SEG or Zarr.", None, _texts),
    Flag("--val-image", "data", "val_image", "Validation scenes for a scene split.", None, _texts),
    Flag("--val-labels", "data", "val_labels", "Their labels.", None, _texts),
    Flag("--classes", "data", "classes", "Number of classes K.", int),
    Flag("--class-names", "data", "class_names", "Comma-separated class names (K of them).", None, _names),
    Flag("--label-map", "data", "label_map", "Raw label -> class, e.g. 255:1 or 0:ignore or yes:1."),
    Flag("--ignore-index", "data", "ignore_index", "Label that never counts.", int),
    Flag("--bands", "data", "bands", "1-based bands to read, e.g. 4,3,2 (default: all).", None, _ints),
    Flag("--series", "data", "series", "DICOM SeriesInstanceUID when a folder holds several."),
    Flag("--window", "data", "window", "CT intensity window 'low,high' in HU, or a preset."),
    Flag("--resample-labels", "data", "resample_labels", "Resample labels on another grid (nearest).", is_flag=True),
    Flag("--label-attribute", "data", "label_attribute", "Vector labels: the attribute holding the class."),
    Flag("--label-name", "data", "label_name", "OME-Zarr: the label image in the labels group."),
    Flag("--all-touched", "data", "all_touched", "Vector labels: burn every pixel a shape touches.", is_flag=True),
    Flag("--tile", "data", "tile", "Tile size in pixels.", int),
    Flag("--split", "data", "split", "Validation split: spatial blocks or whole scenes.", _choice(["block", "scene"])),
    Flag("--val-fraction", "data", "val_fraction", "Share of blocks (or scenes) held out.", float),
    Flag("--block", "data", "block", "Split block side in pixels (default: 2 tiles).", int),
    Flag("--windows", "data", "windows", "Same grid tiles each epoch, or random offsets.", _choice(["grid", "random"])),
    Flag("--samples", "data", "samples", "Tiles per epoch (random or balanced windows).", int),
    Flag("--balanced", "data", "balanced", "Class-balanced tile sampling.", is_flag=True),
    Flag(
        "--min-label-share",
        "data",
        "min_label_share",
        "Refuse a label file whose classes but the most common cover less of its pixels (0: off).",
        float,
    ),
    Flag("--backbone", "model", "backbone", "DeepLabV3 backbone.", _choice([b.value for b in Backbone])),
    Flag("--init", "model", "init", "Starting weights: coco, imagenet, none, or a checkpoint PATH."),
    Flag("--download", "model", "download", "Download --init weights into torch's cache if missing.", is_flag=True),
    Flag("--precision", "model", "precision", "AMP precision.", _choice([p.value for p in Precision])),
    Flag("--grad-checkpointing", "model", "grad_checkpointing", "Recompute activations (less memory).", is_flag=True),
    Flag(
        "--precise-bn",
        "model",
        "precise_bn",
        "Batches to re-estimate BatchNorm statistics on each epoch (0: off).",
        int,
    ),
    Flag("--lr", "optim", "lr", "Learning rate (card: 1e-5..1e-4).", float),
    Flag("--batch-size", "optim", "batch_size", "Tiles per step per worker (card: 2..32).", int),
    Flag("--epochs", "optim", "epochs", "Epochs (card: 1..20).", int),
    Flag("--accumulate", "optim", "accumulate", "Micro-batches per optimizer step.", int),
    Flag("--weight-decay", "optim", "weight_decay", "AdamW weight decay.", float),
    Flag("--class-weights", "optim", "class_weights", "Loss weight per class: auto (1/sqrt frequency) or 1,5."),
    Flag("--force", "optim", "force", "Accept values outside the fine-tuning card's ranges.", is_flag=True),
    Flag("--out", "run", "out", "Folder for checkpoints, config.yaml, metrics and model.pt."),
    Flag("--num-workers", "run", "num_workers", "DDP workers.", int),
    Flag("--use-gpu", "run", "use_gpu", "One GPU per worker, NCCL.", is_flag=True),
    Flag(
        "--cpus-per-worker",
        "run",
        "cpus_per_worker",
        "Ray CPUs per worker (default: share, keep one for reads).",
        float,
    ),
    Flag("--resume", "run", "resume", "Continue from a checkpoint.pt (or its folder)."),
    Flag("--stop-after", "run", "stop_after", "Stop after this many epochs (resume later; the schedule stays).", int),
    Flag("--seed", "run", "seed", "Seed of the split, the sampling and the augmentation.", int),
    Flag("--augment", "run", "augment", "Augmentation preset.", _choice(["remote-sensing", "ct", "none"])),
    Flag("--augment-custom", "run", "augment_custom", "Extra albumentations transforms, YAML list.", None, _transforms),
    Flag("--address", "run", "address", "Ray cluster to join (default: a local Ray).", envvar="RAY_ADDRESS"),
    Flag("--num-cpus", "run", "num_cpus", "CPUs of the local Ray (default: all).", int),
)


def _key(name: str) -> str:
    return name.lstrip("-").replace("-", "_")


def _yaml_value(flag: Flag, value: Any) -> Any:
    """A value of the YAML file through ``flag``'s own click type, as the same flag on the command line.

    Lists stay lists (the flags that take several values convert them); a
    scalar is text here and is parsed by the flag's type.

    Raises:
        click.BadParameter: for a value the flag's type refuses.
        ConfigError: for a list or mapping where the flag takes one value.
    """
    if isinstance(value, (list, dict)):
        if flag.convert is None or (isinstance(value, dict) and flag.convert is not _transforms):
            kind = "list" if isinstance(value, list) else "mapping"
            raise ConfigError(f"expected a single value, got a {kind} {value!r}")
    elif flag.is_flag:
        value = click.BOOL.convert(value, None, None)
    elif flag.type is not None:
        value = click.types.convert_type(flag.type).convert(value, None, None)
    if flag.convert is not None:
        flag.convert(value)  # refused here, naming the key; build_config converts it again
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    """The file's keys and values, every scalar kept as text (YAML 1.1 would make 5e-5 text and 255:1 a number).

    Raises:
        ConfigError: for an unreadable file or one that is not key: value pairs.
    """
    try:
        data = yaml.load(Path(path).read_text(), Loader=yaml.BaseLoader) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not a readable YAML file ({str(e).splitlines()[0]})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected key: value pairs, got {type(data).__name__}")
    return data


def load_train_config(path: Path | None, values: Mapping[str, Any], explicit: set[str]) -> TrainConfig:
    """The config from the YAML file at ``path`` with the flags in ``explicit`` (dests) on top.

    Each YAML value is parsed by its flag's own click type and converter, so a
    key and its flag accept the same text and mean the same value.

    Raises:
        ConfigError: for an unreadable file, a key that is no flag, or a bad value (one line naming the key).
    """
    merged = {dest: v for dest, v in values.items() if dest in explicit}
    if path is not None:
        by_key = {_key(f.name): f for f in TRAIN_FLAGS}
        for key, value in _read_yaml(path).items():
            flag = by_key.get(str(key).replace("-", "_"))
            if flag is None:
                close = difflib.get_close_matches(str(key), list(by_key), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"{path}: unknown key {key!r}{hint}")
            if flag.dest in explicit or value in _NULLS:
                continue
            try:
                merged[flag.dest] = _yaml_value(flag, value)
            except click.BadParameter as e:
                raise ConfigError(f"{path}: {key}: {e.message}") from None
            except ConfigError as e:
                text = str(e) if str(e).startswith(f"{flag.field}:") else f"{key}: {e}"
                raise ConfigError(f"{path}: {text}") from None
    try:
        return build_config(merged, TRAIN_FLAGS, TRAIN_SECTIONS)  # type: ignore[no-any-return]
    except click.BadParameter as e:
        raise ConfigError(f"{path or 'flags'}: {e.message}") from e
    except TypeError as e:
        raise ConfigError(f"{path or 'flags'}: {e}") from e


@click.command()
@click.argument("config", type=click.Path(path_type=Path, dir_okay=False), required=False)
@config_options(TRAIN_FLAGS, TRAIN_SECTIONS)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@click.pass_context
def train(ctx: click.Context, /, config: Path | None, progress: bool, **values: Any) -> None:
    """Fine-tune DeepLabV3 on labelled scenes with DistributedDataParallel on Ray Train.

    CONFIG is a YAML file whose keys are the flags' names (lr, batch_size,
    image, labels...); flags override it. Writes OUT/checkpoint.pt every
    epoch, OUT/model.pt (for tilewise infer --weights), OUT/metrics.json,
    OUT/curves.png, OUT/confusion.png and OUT/config.yaml.
    """
    from pipeline.cli.infer import Terminated, _catch_sigterm
    from pipeline.errors import USER_ERRORS
    from pipeline.train.run import train as run_train

    # a program embedding tilewise may hand in a model builder: cli.main(args, obj={"model_fn": f})
    model_fn = (ctx.find_root().obj or {}).get("model_fn")
    explicit = {d for d in values if ctx.get_parameter_source(d) in (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)}  # fmt: skip
    _catch_sigterm()
    try:
        cfg = load_train_config(config, values, explicit)
        result = run_train(cfg, progress=progress, model_fn=model_fn)
    except USER_ERRORS as e:
        raise click.ClickException(
            one_line(config or Path("train"), e) if config else " ".join(str(e).split())
        ) from None
    except KeyboardInterrupt:
        click.echo("interrupted; the last finished epoch's checkpoint is kept", err=True)
        sys.exit(130)
    except Terminated:
        click.echo("terminated; the last finished epoch's checkpoint is kept", err=True)
        sys.exit(143)
    last = result.history[-1]
    click.echo(
        f"epoch {last['epoch']}: validation loss {last['val_loss']:.4f}, mIoU {last['miou']}, "
        f"pixel accuracy {last['pixel_accuracy']}"
    )
    click.echo(f"model: {result.model}")
    click.echo(f"checkpoint: {result.checkpoint}")
    click.echo(f"metrics: {result.metrics} (curves.png, confusion.png beside it)")
