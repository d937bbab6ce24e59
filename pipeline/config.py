"""The resolved configuration of a run: one frozen dataclass tree, validated once.

Every default is a named value with its reason. Validation errors name the
field, the value and the valid range, so the CLI can print them as one line.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from models import TTA, Backbone, Precision
from tiling.core import BlendMode, EdgeMode, window_bounds
from tiling.core.labels import check_color_spec, class_colors
from tiling.core.qa import TilePlan
from tiling.errors import ConfigError
from tiling.formats.base import (
    DEFAULT_MAX_BANDS,
    DEFAULT_MAX_CHUNK_MB,
    DEFAULT_MAX_PIXELS,
    ComplexPart,
    ModelProvenance,
    SinkRequest,
    SourceLimits,
)
from tiling.options import lookup_option
from tiling.version import mark

__all__ = [
    "InferenceConfig",
    "InputConfig",
    "ModelConfig",
    "OutputConfig",
    "PipelineConfig",
    "ProductsConfig",
    "RayConfig",
    "TilingConfig",
]


@dataclass(frozen=True)
class TilingConfig:
    """How the scene is cut and put back together."""

    tile: int = 512  # DeepLabV3's receptive field is large; 512 px gives it context
    overlap: float = 0.25  # a quarter tile hides the border effects of a ResNet
    blend: BlendMode | str = BlendMode.GAUSSIAN
    edge: EdgeMode | str = EdgeMode.SHIFT
    axis: int = 0  # volumes: segmented slice by slice across this axis (0 = axial for CT)
    context: int = 1  # volumes: 3 = 2.5-D, the slice and its two neighbours as channels

    def validate(self) -> TilingConfig:
        """A copy with options resolved to enums.

        Raises:
            ConfigError: naming the first invalid field.
        """
        if isinstance(self.tile, bool) or not isinstance(self.tile, int) or self.tile <= 0:
            raise ConfigError(f"tile: must be a positive number of pixels, got {self.tile!r}")
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"overlap: must be in [0, 1), got {self.overlap!r}")
        if self.axis not in (0, 1, 2):
            raise ConfigError(f"axis: must be 0, 1 or 2, got {self.axis!r}")
        if self.context not in (1, 3):
            raise ConfigError(f"context: must be 1 (2-D slices) or 3 (2.5-D), got {self.context!r}")
        blend = lookup_option(self.blend, BlendMode, "blend")
        edge = lookup_option(self.edge, EdgeMode, "edge")
        return replace(self, blend=blend, edge=edge)


@dataclass(frozen=True)
class InputConfig:
    """Which part of a source to read, how to scale its intensities, and how large a source may be.

    ``bands``, ``series``, ``level``, ``allow_drivers`` and ``complex`` are
    reader options: each is passed to the source's format, which refuses one
    it does not take (``--level`` on a GeoTIFF) naming the formats that do.
    ``max_pixels``, ``max_bands`` and ``max_chunk_mb`` are the
    :class:`~tiling.formats.base.SourceLimits` every source is checked
    against right after opening (their defaults say why).
    """

    bands: tuple[int, ...] | None = None  # GeoTIFF: 1-based bands to read; None = every band
    series: str | None = None  # DICOM SeriesInstanceUID when a folder holds several
    level: int | None = None  # OME-Zarr multiscale level (0 = full resolution)
    window: str | None = None  # CT intensity window: "low,high" in HU, or a preset name
    # GeoTIFF: GDAL raster drivers to open beyond GTiff (VRT, JP2OpenJPEG...); a VRT can
    # point at any file and claim any size, so none is opened unless named
    allow_drivers: tuple[str, ...] | None = None
    complex: ComplexPart | str | None = None  # complex (SAR) pixels as abs|real|imag|phase; None = refuse them
    max_pixels: int = DEFAULT_MAX_PIXELS  # pixels over all spatial axes; 10 G = 100k x 100k
    max_bands: int = DEFAULT_MAX_BANDS  # above every hyperspectral sensor in use
    max_chunk_mb: int = DEFAULT_MAX_CHUNK_MB  # one storage chunk of one band, decoded whole

    def validate(self) -> InputConfig:
        """Check the values.

        Raises:
            ConfigError: naming the first invalid field.
        """
        if self.bands is not None and (not self.bands or min(self.bands) < 1):
            raise ConfigError(f"bands: must be 1-based band numbers, got {self.bands!r}")
        if self.level is not None and (
            isinstance(self.level, bool) or not isinstance(self.level, int) or self.level < 0
        ):
            raise ConfigError(f"level: must be a non-negative integer, got {self.level!r}")
        if self.window is not None:
            window_bounds(self.window)  # raises ConfigError naming the presets
        self.limits()  # raises ConfigError naming a limit that is not a positive integer
        complex_part = None if self.complex is None else lookup_option(self.complex, ComplexPart, "complex")
        return replace(self, complex=complex_part)

    def limits(self) -> SourceLimits:
        """The size limits a source is checked against right after opening.

        Raises:
            ConfigError: if a limit is not a positive integer.
        """
        return SourceLimits(self.max_pixels, self.max_bands, self.max_chunk_mb)

    def source_options(self) -> dict[str, Any]:
        """The keywords :func:`tiling.formats.open_source` takes: the reader options
        that were given, by their format option names, and ``limits``.
        """
        return {
            "bands": self.bands, "series": self.series, "level": self.level,
            "allow_drivers": self.allow_drivers, "complex": self.complex, "limits": self.limits(),
        }  # fmt: skip

    def bounds(self) -> tuple[float, float] | None:
        """The intensity window as (low, high), or None."""
        return None if self.window is None else window_bounds(self.window)


@dataclass(frozen=True)
class ModelConfig:
    """Which network, with which weights, at which precision."""

    backbone: Backbone | str = Backbone.RESNET101
    classes: int = 2
    weights: str | None = None  # local checkpoint (a model.pt from tilewise train, or torchvision's)
    # No weights is a random, untrained network whose masks mean nothing: asked for by its seed,
    # so that two runs (and a killed run and its resumption) use the same network.
    random_weights: int | None = None
    # bf16 only where the hardware computes it natively: emulated bf16 is ~4x slower than fp32
    precision: Precision | str = Precision.AUTO
    channels_last: bool = True
    class_names: tuple[str, ...] | None = None
    # torch.compile the model in each actor: minutes of compilation repaid on long GPU runs
    compile: bool = False
    # test-time augmentation: "flips" averages the probabilities of 4 flips of each tile (4x the model's cost)
    tta: TTA | str = TTA.NONE

    def validate(self) -> ModelConfig:
        """A copy with options resolved to enums.

        Raises:
            ConfigError: naming the first invalid field.
        """
        if isinstance(self.classes, bool) or not isinstance(self.classes, int) or not 1 <= self.classes <= 254:
            raise ConfigError(f"classes: must be between 1 and 254 (255 marks nodata), got {self.classes!r}")
        if self.class_names is not None and len(self.class_names) != self.classes:
            raise ConfigError(f"class_names: {len(self.class_names)} names for {self.classes} classes")
        if self.random_weights is not None:
            seed = self.random_weights
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
                raise ConfigError(f"random_weights: the seed must be a whole number >= 0, got {seed!r}")
            if self.weights is not None:
                raise ConfigError(
                    f"random_weights: a seed for a random model was given with weights {self.weights}; "
                    "pass --weights or --random-weights, not both"
                )
        backbone = lookup_option(self.backbone, Backbone, "backbone")
        precision = lookup_option(self.precision, Precision, "precision")
        tta = lookup_option(self.tta, TTA, "tta")
        return replace(self, backbone=backbone, precision=precision, tta=tta)

    @property
    def names(self) -> list[str]:
        """Class names, ``class_0`` ... where none were given."""
        return list(self.class_names or (f"class_{k}" for k in range(self.classes)))

    def require_weights(self) -> None:
        """Refuse to build DeepLabV3 without weights unless a random model was asked for by its seed.

        Raises:
            ConfigError: one line saying what to pass.
        """
        if self.weights is None and self.random_weights is None:
            raise ConfigError(
                "no model weights: pass --weights model.pt (a model from tilewise train, or torchvision "
                "DeepLabV3 weights), or --random-weights SEED for an untrained network whose masks mean nothing"
            )


@dataclass(frozen=True)
class InferenceConfig:
    """How the work is spread over Ray."""

    batch: int = 8  # tiles per forward pass
    actors: int | None = None  # model replicas; None = one per GPU, or one on CPU
    device: str | None = None  # None = cuda when available
    # Bytes of tiles per Ray read task: amortises opening the source, still
    # spreads one scene over many tasks (a whole number of batches per task).
    task_mb: int = 64
    # Cap on Ray Data's object-store use for tiles in flight: without it, reads
    # run ahead of the model and queue up to 30% of RAM, so memory would grow
    # with the scene until that cap. 256 MiB keeps a few batches per operator.
    inflight_mb: int = 256
    # A model actor that dies (out of memory, a crashing decoder) is restarted
    # this many times, then the run ends naming the tiles left; Ray's default
    # of unlimited restarts turns a reproducible crash into a run that never ends.
    max_restarts: int = 3
    # Seconds without a finished tile before the run ends saying where it
    # stood; 0 waits forever. A 512 px ResNet-101 batch takes well under a
    # minute even on a small CPU, so 10 minutes means something is stuck.
    stall_timeout: float = 600.0
    # GPUs each model actor holds: 1 gives every actor a card; 0.5 packs two
    # actors per card, worth it when one actor leaves the GPU idle while it waits for tiles.
    gpus_per_actor: float = 1.0
    # Read tasks running at once; None lets Ray Data scale them with the free CPUs
    # (and its backpressure), a number caps them, e.g. to spare a shared file server.
    readers: int | None = None

    def validate(self) -> InferenceConfig:
        """Check the values.

        Raises:
            ConfigError: naming the first invalid field.
        """
        for name in ("batch", "actors", "task_mb", "inflight_mb", "readers"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise ConfigError(f"{name}: must be a positive integer, got {v!r}")
        if isinstance(self.max_restarts, bool) or not isinstance(self.max_restarts, int) or self.max_restarts < 0:
            raise ConfigError(f"max_restarts: must be 0 or more, got {self.max_restarts!r}")
        if not (isinstance(self.gpus_per_actor, (int, float)) and 0 < self.gpus_per_actor <= 8):
            raise ConfigError(f"gpus_per_actor: must be a number in (0, 8], got {self.gpus_per_actor!r}")
        if not (isinstance(self.stall_timeout, (int, float)) and self.stall_timeout >= 0):
            raise ConfigError(
                f"stall_timeout: must be 0 (wait forever) or a number of seconds, got {self.stall_timeout!r}"
            )
        return self


@dataclass(frozen=True)
class RayConfig:
    """Where Ray runs: an embedded local instance unless an address is given."""

    address: str | None = None  # or RAY_ADDRESS; None = start a local Ray
    num_cpus: int | None = None  # CPUs of the local Ray; None = all
    # Object store of the local Ray. Ray's default is 30% of RAM, and the
    # store's shared pages, once touched, stay resident: a small store keeps
    # peak memory flat while streaming tiles (Ray Data spills beyond it).
    object_store_mb: int = 512


@dataclass(frozen=True)
class OutputConfig:
    """Options of the mask's format (its sink).

    Each is passed to the output format, which refuses one it does not take
    (``--seg-type`` on a COG) naming the formats that do.
    """

    seg_type: str | None = None  # DICOM SEG: binary (the default: every reader has it) or labelmap
    seg_codes: str | None = None  # DICOM SEG: a JSON/YAML file of coded categories and types per class
    seg_creator: str | None = None  # DICOM SEG: ContentCreatorName, a person name (default: tilewise^automatic)

    def sink_options(self) -> dict[str, Any]:
        """The writer options that were given, by their format option names."""
        return {"seg_type": self.seg_type, "seg_codes": self.seg_codes, "seg_creator": self.seg_creator}


@dataclass(frozen=True)
class ProductsConfig:
    """What is made from the finished mask after a successful run (see :mod:`pipeline.products`)."""

    vector: str | None = None  # GeoPackage of polygons per class (a folder when several sources)
    simplify: float | None = None  # polygon simplification tolerance, map units; None = exact pixel outlines
    vector_classes: tuple[int, ...] | None = None  # class values to polygonise; None = every class
    quicklook: bool = False  # a PNG of the source with the mask and a legend, beside the mask
    # class colours of every product (the COG's colour table and style, the STAC Item, the polygons'
    # style, the quicklook): ("water=#1f78b4", ...) by class name, or ("#1f78b4", ...) in class order;
    # None = the tab10 palette by class index
    class_colors: tuple[str, ...] | None = None

    def validate(self) -> ProductsConfig:
        """Check the values.

        Raises:
            ConfigError: naming the first invalid field.
        """
        if self.vector is None:
            for name, flag in (("simplify", "--simplify"), ("vector_classes", "--vector-classes")):
                if getattr(self, name) is not None:
                    raise ConfigError(f"{name} ({flag}) applies to the polygons of --vector; add --vector out.gpkg")
        if self.simplify is not None and not self.simplify >= 0:
            raise ConfigError(f"simplify: the tolerance must be >= 0 map units, got {self.simplify!r}")
        if self.vector_classes is not None and not all(0 <= k < 255 for k in self.vector_classes):
            raise ConfigError(f"vector_classes: class values are 0 to 254, got {self.vector_classes!r}")
        if self.class_colors is not None:
            check_color_spec(self.class_colors)  # the names are checked against the classes by class_colors()
        return self


_hashing = threading.Lock()


def _sha256(path: str) -> str:
    """SHA-256 of a weights file, hex; remembered per (path, size, mtime), as a batch asks once per scene.

    One hash at a time: scenes planned on threads then wait for the first instead of each
    reading the whole checkpoint.
    """
    st = Path(path).stat()
    with _hashing:
        return _sha256_of(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class PipelineConfig:
    """Everything one inference run needs."""

    tiling: TilingConfig = field(default_factory=TilingConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    products: ProductsConfig = field(default_factory=ProductsConfig)
    save_probs: bool = False
    allow_no_crs: bool = False  # a mask without CRS is useless in a GIS: refuse unless asked
    overwrite: bool = False  # replace existing masks, and only those tilewise wrote
    output_format: str | None = None  # a format's --format name (cog, ome-zarr, dicom-seg); None = from --out
    # seam QA: coverage raster and overlap disagreement beside the mask (two more accumulator planes)
    qa: bool = False

    def validate(self) -> PipelineConfig:
        """A copy with options resolved to enums.

        Raises:
            ConfigError: naming the first invalid field.
        """
        if self.model.weights is not None and not Path(self.model.weights).is_file():
            raise ConfigError(f"weights: {self.model.weights}: no such file")
        return replace(
            self, tiling=self.tiling.validate(), input=self.input.validate(),
            model=self.model.validate(), inference=self.inference.validate(), products=self.products.validate(),
        )  # fmt: skip

    def class_colors(self) -> tuple[tuple[int, int, int], ...]:
        """One RGB colour per class: ``products.class_colors`` resolved against the class names.

        Call it once the class names are final (after an export's are applied).

        Raises:
            ConfigError: for a name that is no class, or a list of the wrong length.
        """
        return class_colors(self.model.names, self.products.class_colors)

    def sink_request(self, model: object | None = None) -> SinkRequest:
        """What this run asks of the mask's sink: class names, probabilities, format options, provenance.

        Args:
            model: the ``torch.nn.Module`` given instead of DeepLabV3, if any
                (the provenance then names its class).
        """
        backbone = str(getattr(self.model.backbone, "value", self.model.backbone))
        name = type(model).__name__ if model is not None else "DeepLabV3-" + backbone.replace("resnet", "ResNet")
        weights = self.model.weights if model is None else None
        seed = self.model.random_weights if model is None else None
        label = Path(weights).name if weights else (f"random initialisation, seed {seed}" if seed is not None else None)
        provenance = ModelProvenance(name, label, _sha256(weights) if weights else None, mark())
        tiling = self.tiling
        plan = TilePlan(tiling.tile, float(tiling.overlap), str(tiling.edge), str(tiling.blend))
        return SinkRequest(
            tuple(self.model.names), self.save_probs, self.allow_no_crs, self.output.sink_options(), provenance,
            plan, self.qa, self.class_colors(),
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, for saving next to the outputs."""
        return asdict(self)
