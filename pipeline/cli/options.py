"""Every configuration flag, declared once, with its default read from the config dataclasses.

A :class:`Flag` names the config field it sets (``tiling.tile``). Its click
option takes that field's default, so :mod:`pipeline.config` stays the one
source of truth, and :func:`build_config` turns the parsed values back into a
:class:`~pipeline.config.PipelineConfig` by keyword.

Another command with its own config tree (training, say) declares its own
``schema`` (section name -> dataclass, ``None`` for the root) and flags, and
uses the same :func:`config_options` and :func:`build_config`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

import click

from models import TTA, Backbone, Precision
from pipeline.config import (
    InferenceConfig,
    InputConfig,
    ModelConfig,
    OutputConfig,
    PipelineConfig,
    ProductsConfig,
    RayConfig,
    TilingConfig,
)
from tiling.core import BlendMode, EdgeMode
from tiling.formats.base import ComplexPart
from tiling.formats.dicom import SegType

__all__ = ["FLAGS", "SECTIONS", "Flag", "build_config", "config_options"]

F = TypeVar("F", bound=Callable[..., Any])

#: Config sections of inference by the name a flag uses; None is PipelineConfig itself.
SECTIONS: Mapping[str | None, type] = {
    "tiling": TilingConfig,
    "model": ModelConfig,
    "inference": InferenceConfig,
    "ray": RayConfig,
    "input": InputConfig,
    "output": OutputConfig,
    "products": ProductsConfig,
    None: PipelineConfig,
}


def _csv_ints(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated whole numbers like 1,2,3, got {value!r}") from None


def _csv_names(value: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in value.split(","))


class _Count(click.ParamType[int]):
    """A whole number written plainly, with underscores, or in exponent form (``2e10``)."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        text = str(value).replace("_", "")
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            number = float("nan")
        if not number.is_integer():
            self.fail(f"expected a whole number like 20000000000 or 2e10, got {value!r}", param, ctx)
        return int(number)


def _choice(enum: type[Enum]) -> click.Choice[str]:
    return click.Choice([m.value for m in enum], case_sensitive=False)


@dataclass(frozen=True)
class Flag:
    """One command-line flag that sets one config field.

    Attributes:
        name: the flag, e.g. ``"--tile"``.
        section: the config section (``"tiling"``), or None for a top-level field.
        field: the field it sets.
        help: the help text.
        type: the click type; ``str`` when None.
        convert: turns the parsed string into the field's value (e.g. a CSV into a tuple).
        is_flag: a boolean switch.
        envvar: an environment variable that sets it too.
        aliases: other names of the same flag (``--num-workers`` for ``--actors``).
    """

    name: str
    section: str | None
    field: str
    help: str
    type: Any = None
    convert: Callable[[Any], Any] | None = None
    is_flag: bool = False
    envvar: str | None = None
    aliases: tuple[str, ...] = ()

    def default(self, schema: Mapping[str | None, type] = SECTIONS) -> Any:
        """The field's default in its config dataclass, as the flag shows it (enums by value)."""
        f = {f.name: f for f in dataclasses.fields(schema[self.section])}[self.field]
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:  # pragma: no cover - every config field has a default
            value = None
        return value.value if isinstance(value, Enum) else value

    @property
    def dest(self) -> str:
        """The keyword click passes the value under."""
        return f"{self.section or 'run'}__{self.field}"

    def option(self, schema: Mapping[str | None, type] = SECTIONS) -> Callable[[F], F]:
        """The click option decorator, its default read from ``schema``."""
        default = self.default(schema)
        kwargs: dict[str, Any] = {"help": self.help, "envvar": self.envvar}
        if self.is_flag:
            kwargs.update(is_flag=True, default=bool(default))
        else:
            kwargs.update(type=self.type, default=default, show_default=default is not None)
            if self.convert is not None and default is not None and not isinstance(default, str):
                kwargs["default"] = ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
        return click.option(self.name, *self.aliases, self.dest, **kwargs)


FLAGS: tuple[Flag, ...] = (
    Flag("--tile", "tiling", "tile", "Tile size in pixels.", int),
    Flag("--overlap", "tiling", "overlap", "Tile overlap, a fraction in [0, 1).", float),
    Flag("--blend", "tiling", "blend", "How overlapping tiles are combined.", _choice(BlendMode)),
    Flag("--edge", "tiling", "edge", "Last tile per axis: shift inward or pad.", _choice(EdgeMode)),
    Flag("--axis", "tiling", "axis", "Volumes: segment slice by slice across this axis.", int),
    Flag(
        "--context",
        "tiling",
        "context",
        "Volumes: 3 = 2.5-D (the slice and its neighbours as channels).",
        click.Choice(["1", "3"]),
        int,
    ),
    Flag("--batch", "inference", "batch", "Tiles per forward pass.", int),
    Flag(
        "--actors",
        "inference",
        "actors",
        "Model replicas, the inference workers (default: one per GPU, else one).",
        int,
        aliases=("--num-workers",),
    ),
    Flag(
        "--gpus-per-worker",
        "inference",
        "gpus_per_actor",
        "GPUs each model actor holds on a GPU cluster; 0.5 packs two actors per card.",
        float,
    ),
    Flag(
        "--readers",
        "inference",
        "readers",
        "Read tasks at once (CPU readers); default: as many as Ray Data schedules on the free CPUs.",
        int,
    ),
    Flag(
        "--max-restarts",
        "inference",
        "max_restarts",
        "Restarts of a model actor that died (out of memory, a crash) before the run ends.",
        int,
    ),
    Flag(
        "--stall-timeout",
        "inference",
        "stall_timeout",
        "Seconds without a finished tile before the run ends saying where it stood (0: wait forever).",
        float,
    ),
    Flag("--device", "inference", "device", "torch device (default: cuda if available, else cpu)."),
    Flag("--classes", "model", "classes", "Number of output classes K.", int),
    Flag("--class-names", "model", "class_names", "Comma-separated class names (K of them).", None, _csv_names),
    Flag("--backbone", "model", "backbone", "DeepLabV3 backbone.", _choice(Backbone)),
    Flag(
        "--weights",
        "model",
        "weights",
        "A model.pt from tilewise train, or a torchvision DeepLabV3 checkpoint.",
        click.Path(dir_okay=False),
    ),
    Flag(
        "--random-weights",
        "model",
        "random_weights",
        "No weights: an untrained network from this seed (masks mean nothing; for trying the pipeline).",
        click.IntRange(min=0),
    ),
    Flag("--precision", "model", "precision", "Forward-pass precision.", _choice(Precision)),
    Flag("--compile", "model", "compile", "torch.compile the model in each actor (long GPU runs).", is_flag=True),
    Flag(
        "--tta",
        "model",
        "tta",
        "Test-time augmentation: flips averages the probabilities of 4 flips of each tile (4x the model time).",
        _choice(TTA),
    ),
    Flag("--bands", "input", "bands", "1-based bands to use, e.g. 1,2,3 (default: all).", None, _csv_ints),
    Flag("--series", "input", "series", "DICOM SeriesInstanceUID, when the folder holds several series."),
    Flag("--level", "input", "level", "OME-Zarr multiscale level to segment (default 0).", int),
    Flag("--window", "input", "window", "CT intensity window 'low,high' in HU, or soft-tissue|lung|bone|brain."),
    Flag(
        "--allow-drivers",
        "input",
        "allow_drivers",
        "GeoTIFF: also open these GDAL raster drivers, e.g. VRT or JP2OpenJPEG,PNG (default: GTiff/COG only).",
        None,
        _csv_names,
    ),
    Flag(
        "--complex",
        "input",
        "complex",
        "Complex (SAR) pixels: read their abs, real, imag or phase (default: refuse them).",
        _choice(ComplexPart),
    ),
    Flag("--max-pixels", "input", "max_pixels", "Refuse a source claiming more pixels (2e10 works too).", _Count()),
    Flag("--max-bands", "input", "max_bands", "Refuse a source claiming more bands.", int),
    Flag(
        "--max-chunk-mb", "input", "max_chunk_mb", "Refuse a source whose storage chunk per band is larger (MiB).", int
    ),
    Flag("--address", "ray", "address", "Ray cluster to join (default: start a local Ray).", envvar="RAY_ADDRESS"),
    Flag("--num-cpus", "ray", "num_cpus", "CPUs for the local Ray (default: all).", int),
    Flag(
        "--save-probs",
        None,
        "save_probs",
        "Also write per-class probabilities (x255): <out>.probs.tif, a FRACTIONAL SEG <out>.probs.dcm, or probs/ in a .zarr.",
        is_flag=True,
    ),
    Flag(
        "--allow-no-crs",
        None,
        "allow_no_crs",
        "Accept a source without CRS (the mask keeps only the pixel grid).",
        is_flag=True,
    ),
    Flag(
        "--format",
        None,
        "output_format",
        "Mask format (default: from --out's extension: .tif, .zarr, .dcm, or the .zarr store --out lies in).",
    ),
    Flag(
        "--seg-type",
        "output",
        "seg_type",
        "DICOM SEG only: binary (every viewer reads it; the default) or labelmap (Supplement 243).",
        _choice(SegType),
    ),
    Flag(
        "--seg-codes",
        "output",
        "seg_codes",
        "DICOM SEG only: JSON/YAML file of SNOMED category and type codes per class (default: Tissue).",
        click.Path(dir_okay=False),
    ),
    Flag(
        "--seg-creator",
        "output",
        "seg_creator",
        "DICOM SEG only: ContentCreatorName, a DICOM person name such as Doe^Jane (default: tilewise^automatic).",
    ),
    Flag(
        "--vector",
        "products",
        "vector",
        "Also write the mask's polygons per class to this GeoPackage (a folder with several SRC); COG masks.",
        click.Path(),
    ),
    Flag("--simplify", "products", "simplify", "--vector: simplification tolerance in map units.", float),
    Flag(
        "--vector-classes",
        "products",
        "vector_classes",
        "--vector: class values to polygonise, e.g. 1,2 (default: all).",
        None,
        _csv_ints,
    ),
    Flag(
        "--class-colors",
        "products",
        "class_colors",
        "Class colours of the mask's colour table and style, the STAC Item, the polygons and the quicklook: "
        "name=#rrggbb,... or #rrggbb,... in class order (default: tab10 by class index).",
        None,
        _csv_names,
    ),
    Flag(
        "--quicklook",
        "products",
        "quicklook",
        "Also write <mask>.quicklook.png: the source, the mask, a legend.",
        is_flag=True,
    ),
    Flag(
        "--qa",
        None,
        "qa",
        "Seam QA: also write <mask>.qa.tif (tiles and blend weight per pixel) and <mask>.qa.json "
        "(overlap disagreement between tiles); COG masks.",
        is_flag=True,
    ),
    Flag(
        "--overwrite",
        None,
        "overwrite",
        "Replace existing masks; only masks tilewise wrote are ever replaced.",
        is_flag=True,
    ),
)


def config_options(flags: Sequence[Flag] = FLAGS, schema: Mapping[str | None, type] = SECTIONS) -> Callable[[F], F]:
    """A decorator adding every flag of ``flags`` to a command, defaults read from ``schema``."""

    def decorate(f: F) -> F:
        for flag in reversed(flags):
            f = flag.option(schema)(f)
        return f

    return decorate


def build_config(
    values: Mapping[str, Any], flags: Sequence[Flag] = FLAGS, schema: Mapping[str | None, type] = SECTIONS
) -> Any:
    """The config the parsed flag ``values`` (keyed by :attr:`Flag.dest`) describe, built by keyword.

    Values that click did not parse (absent keys) keep the config's defaults.
    Returns an instance of ``schema[None]`` (a :class:`PipelineConfig` by default).
    """
    sections: dict[str | None, dict[str, Any]] = {name: {} for name in schema}
    for flag in flags:
        if flag.dest not in values:
            continue
        value = values[flag.dest]
        if value is not None and flag.convert is not None:
            value = flag.convert(value)
        sections[flag.section][flag.field] = value
    top = sections.pop(None)
    parts = {name: schema[name](**kw) for name, kw in sections.items() if name is not None}
    return schema[None](**parts, **top)
