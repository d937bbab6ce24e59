"""What every format implements: the Source protocol, the Sink base class and the Format record.

A format is one folder under ``tiling/formats/`` whose ``__init__.py``
defines a :class:`Format` record: its name, how to recognise its files,
the reader options it accepts, how to open a source and which sink writes
its masks. The registry (:mod:`tiling.formats`) imports those records
lazily. Nothing here imports a format or the registry, so formats depend on
this module and never on each other.
"""

from __future__ import annotations

import math
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from tiling.core import staging
from tiling.core.qa import Disagreement, TilePlan
from tiling.core.windows import Window, clip, intersects
from tiling.errors import (
    ConfigError,
    SinkError,
    SinkFinalizedError,
    SourceOpenError,
    SourceReadError,
    SourceTooLargeError,
)
from tiling.formats.reference import Reference

if TYPE_CHECKING:  # typing.Self is 3.11+; annotations are strings at run time
    from typing_extensions import Self

__all__ = [
    "DEFAULT_MAX_BANDS",
    "DEFAULT_MAX_CHUNK_MB",
    "DEFAULT_MAX_PIXELS",
    "ComplexPart",
    "Format",
    "ModelProvenance",
    "NoOptions",
    "Sink",
    "SinkRequest",
    "Source",
    "SourceBase",
    "SourceLimits",
    "StagedFiles",
    "check_complex",
    "check_label_shape",
    "check_writable",
    "empty_read",
    "real_float32",
    "sink_error",
    "stale_temp_files",
    "staged_file",
    "temp_name",
]

#: Largest image, in pixels over every spatial axis: 10 gigapixels is a
#: 100,000 x 100,000 whole-slide image, about 70,000 tiles of 512 px (hours on
#: a GPU, days on a CPU). A larger claim is more often a broken or hostile
#: header than an image anyone means to segment in one run.
DEFAULT_MAX_PIXELS = 10_000_000_000
#: Most bands: above every hyperspectral sensor in use (AVIRIS-NG has 425);
#: one 512 px float32 tile of 512 bands is already 512 MiB.
DEFAULT_MAX_BANDS = 512
#: Largest storage chunk (block, strip, tile, frame) per band, in MiB. A reader
#: decodes a chunk whole and the stitcher's output block follows a Zarr
#: source's chunks; Zarr and Dask advise chunks of 1-100 MB, GeoTIFF blocks
#: are 256-512 px, and a one-strip 8192 x 8192 float32 GeoTIFF is 256 MiB.
DEFAULT_MAX_CHUNK_MB = 256


@dataclass(frozen=True)
class NoOptions:
    """The options of a format whose reader takes none."""


@runtime_checkable
class Source(Protocol):
    """An image of any rank that can be read window by window.

    Attributes:
        path: the file, folder or store.
        format: the registry name of its format (``geotiff``, ``dicom``, ``zarr``...).
        options: the format's reader options, resolved (a frozen dataclass),
            so that ``(path, format, options)`` reopens exactly this source.
        shape: spatial shape: (rows, cols) for images, (z, y, x) for volumes.
        count: bands (channels) per pixel.
        dtype: the dtype :meth:`read` returns (floats as float32).
        block_shape: the storage block per spatial axis; reads aligned to it
            touch the fewest blocks.
        reference: where the pixels lie (see :mod:`tiling.formats.reference`).

    ``read`` returns ``(data, valid)``: data (count, *window.shape) with
    invalid pixels zeroed, and valid (*window.shape) bool, False where the
    source marks nodata, where a value is not finite, and where the window
    overruns the image (that part is padded).
    """

    @property
    def path(self) -> Path: ...  # noqa: D102
    @property
    def format(self) -> str: ...  # noqa: D102
    @property
    def options(self) -> Any: ...  # noqa: D102
    @property
    def shape(self) -> tuple[int, ...]: ...  # noqa: D102
    @property
    def count(self) -> int: ...  # noqa: D102
    @property
    def dtype(self) -> np.dtype: ...  # noqa: D102
    @property
    def block_shape(self) -> tuple[int, ...]: ...  # noqa: D102
    @property
    def reference(self) -> Reference: ...  # noqa: D102

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read ``window``, padded past the edge."""
        ...

    def close(self) -> None:
        """Release files and caches."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


def empty_read(
    window: Window, shape: tuple[int, ...], count: int, dtype: np.dtype | type
) -> tuple[np.ndarray, np.ndarray, Window | None]:
    """The start of every ``read``: zeroed data (count, *window.shape), an
    all-invalid mask, and the part of ``window`` inside an image of ``shape``
    (None when the window lies wholly outside, so the zeros are the answer).
    """
    data = np.zeros((count, *window.shape), dtype)
    valid = np.zeros(window.shape, bool)
    if not intersects(window, Window((0,) * len(shape), tuple(shape))):
        return data, valid, None
    return data, valid, clip(window, shape)


def _size_text(shape: Sequence[int]) -> str:
    return " x ".join(f"{int(n):,}" for n in shape)


@dataclass(frozen=True)
class SourceLimits:
    """The largest source tilewise opens, checked right after opening and before any planning.

    A header is a claim: a 300-byte VRT can declare 1,000,000 x 1,000,000
    pixels and a 265-byte Zarr store one 100,000 x 100,000 chunk, and
    planning or stitching what they claim would exhaust memory. The registry
    (:func:`tiling.formats.open_source`) checks every source against these
    limits from its ``shape``, ``count``, ``dtype`` and ``block_shape``.

    Attributes:
        max_pixels: most pixels over every spatial axis (rows x cols, or z x y x).
        max_bands: most bands (channels) per pixel.
        max_chunk_mb: largest storage chunk of one band, ``prod(block_shape) * itemsize``, in MiB.

    Raises:
        ConfigError: if a limit is not a positive integer.
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bands: int = DEFAULT_MAX_BANDS
    max_chunk_mb: int = DEFAULT_MAX_CHUNK_MB

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_bands", "max_chunk_mb"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{name}: must be a positive integer, got {v!r}")

    def check(self, source: Source) -> None:
        """Refuse ``source`` if it claims more than these limits allow.

        Raises:
            SourceTooLargeError: one line naming the file, the claimed size,
                the limit and the flag that raises it.
        """
        path, shape = source.path, tuple(int(n) for n in source.shape)
        pixels = math.prod(shape)
        if pixels > self.max_pixels:
            raise SourceTooLargeError(
                f"{path}: claims {_size_text(shape)} pixels ({pixels:.3g}), over the limit of "
                f"{self.max_pixels:.3g}; if the image is genuine, raise it with --max-pixels {pixels}"
            )
        if int(source.count) > self.max_bands:
            raise SourceTooLargeError(
                f"{path}: claims {int(source.count):,} bands, over the limit of {self.max_bands:,}; "
                f"if the image is genuine, raise it with --max-bands {int(source.count)}"
            )
        block = tuple(int(n) for n in source.block_shape)
        mib = math.prod(block) * np.dtype(source.dtype).itemsize / 2**20
        if mib > self.max_chunk_mb:
            raise SourceTooLargeError(
                f"{path}: one storage chunk is {_size_text(block)} pixels of {np.dtype(source.dtype)} "
                f"({mib:,.0f} MiB per band), over the limit of {self.max_chunk_mb:,} MiB; rechunk it, or "
                f"if it is genuine raise the limit with --max-chunk-mb {math.ceil(mib)}"
            )


class ComplexPart(str, Enum):
    """Which real value a reader makes of a complex pixel (SAR, interferograms).

    A model takes real values, so complex input is refused unless one of
    these is asked for.
    """

    ABS = "abs"  # amplitude |z|
    REAL = "real"  # real part
    IMAG = "imag"  # imaginary part
    PHASE = "phase"  # angle in radians, in (-pi, pi]

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


def check_complex(path: Path, dtype: np.dtype | str, part: ComplexPart | None) -> None:
    """Refuse complex pixels unless a conversion was asked for.

    Raises:
        SourceOpenError: if ``dtype`` is complex and ``part`` is None.
    """
    if part is None and str(dtype).startswith("complex"):
        raise SourceOpenError(
            f"{path}: has complex pixels ({dtype}), e.g. SAR; a model takes real values, so pass "
            "--complex abs (amplitude), real, imag or phase (complex= in Python)"
        )


#: The largest finite float32.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def real_float32(data: np.ndarray, path: Path, where: str, part: ComplexPart | None = None) -> np.ndarray:
    """Float or complex pixels as float32, complex ones through ``part``.

    Args:
        data: pixels of any float or complex dtype.
        path: the file, for the message.
        where: which part of it was read, for the message (``rows 0:256, cols 0:256``).
        part: what to make of complex values; required when ``data`` is complex.

    Raises:
        SourceReadError: if a finite value lies beyond float32's range: cast, it
            would become infinite and so silently nodata.
    """
    if data.dtype.kind == "c":
        check_complex(path, data.dtype, part)
        part = ComplexPart(part)
        convert: dict[ComplexPart, Callable[[np.ndarray], np.ndarray]] = {
            ComplexPart.ABS: np.abs, ComplexPart.REAL: np.real, ComplexPart.IMAG: np.imag, ComplexPart.PHASE: np.angle,
        }  # fmt: skip
        data = convert[part](data)
    if data.dtype.itemsize > 4:
        finite = data[np.isfinite(data)]
        if finite.size and max(-float(finite.min()), float(finite.max())) > _FLOAT32_MAX:
            raise SourceReadError(
                f"{path}: {where} holds values from {float(finite.min()):.3g} to {float(finite.max()):.3g}, "
                f"beyond float32's range (+-{_FLOAT32_MAX:.3g}) in which tilewise computes; "
                "rescale the data first (e.g. gdal_translate -scale)"
            )
    return data.astype(np.float32, copy=False)


class SourceBase:
    """Context-manager plumbing shared by the readers: ``with`` closes the source."""

    def close(self) -> None:
        """Release files and caches; a no-op unless a reader holds some."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_label_shape(path: Path, shape: tuple[int, ...], count: int, image: Source) -> None:
    """Refuse labels that do not cover ``image`` pixel for pixel with one band.

    Raises:
        ConfigError: naming both shapes, or the band count.
    """
    if count != 1:
        raise ConfigError(f"{path}: labels must have one band, this has {count}")
    if tuple(shape) != tuple(image.shape):
        raise ConfigError(
            f"{path}: labels have shape {tuple(shape)}, the image {image.path} has {tuple(image.shape)}; "
            "they must cover the same pixels"
        )


def check_writable(path: Path, folder: bool = False) -> None:
    """Fail before any work if ``path`` cannot become the output.

    Args:
        path: the final output path.
        folder: the output is a folder (a Zarr store) rather than a file.

    Raises:
        SinkError: if the parent folder is missing, not a folder or not
            writable, or something of the other kind sits at ``path``.
    """
    parent = path.parent
    if not parent.exists():
        raise SinkError(f"{path}: cannot write output, folder {parent} does not exist")
    if not parent.is_dir():
        raise SinkError(f"{path}: cannot write output, {parent} is not a folder")
    if not os.access(parent, os.W_OK):
        raise SinkError(f"{path}: cannot write output, folder {parent} is not writable")
    if folder and path.exists() and not path.is_dir():
        raise SinkError(f"{path}: cannot write output, a file of that name exists")
    if not folder and path.is_dir():
        raise SinkError(f"{path}: cannot write output, a folder of that name exists")


def sink_error(path: Path, e: BaseException, doing: str = "writing") -> SinkError:
    """One line for an I/O failure while writing ``path``; a full disk says so and what to do.

    GDAL, zarr and the OS report a full disk in different words (ENOSPC,
    "No space left on device", "Free disk space available is ..."); all of
    them become the same message.
    """
    text = " ".join(str(e).split()) or type(e).__name__
    errno = getattr(e, "errno", None)
    if errno == 28 or "no space left" in text.lower() or "free disk space" in text.lower() or _nearly_full(path):
        return SinkError(
            f"{path}: no space left on the device while {doing} it; free some space or choose another --out"
        )
    if errno == 27 or "file too large" in text.lower():
        return SinkError(f"{path}: the file grew past the size this file system or process allows while {doing} it")
    return SinkError(f"{path}: cannot write output ({text})")


def _nearly_full(path: Path) -> bool:
    """Whether the file system of ``path`` has (almost) no space left: libraries often say only "I/O error"."""
    try:
        return shutil.disk_usage(path.parent).free < 2**20
    except OSError:
        return False


def temp_name(final: Path, suffix: str) -> Path:
    """A hidden sibling of ``final`` for work in progress: ``.<name>.<host>-<pid>-<random><suffix>``.

    The name is claimed for this process by a lock beside it
    (:mod:`tiling.core.staging`), so a later run tells the leftovers of a
    killed run (nobody holds their lock) from the work of a live one
    (:func:`stale_temp_files`), on any host and in any container. Release
    the claim with :func:`tiling.core.staging.release` once the temporary
    is published or removed; a :class:`Sink` releases its own when it is
    finalised or aborted, :class:`StagedFiles` when published or removed.
    """
    return staging.temp_path(final.parent, f".{final.name}.", suffix)


@contextmanager
def staged_file(final: Path, suffix: str | None = None) -> Iterator[Path]:
    """A claimed temporary sibling of ``final`` (:func:`temp_name`) to write whole, renamed onto ``final``
    when the block ends without an error.

    Whatever happens the temporary is gone and its claim released afterwards, so a
    replaced file (a STAC Item, a state record, a PNG) never leaves a lock behind.
    """
    tmp = temp_name(final, final.suffix if suffix is None else suffix)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
        staging.release(tmp)


class StagedFiles:
    """Files written under temporary names (:func:`temp_name`) and renamed into place together.

    What a sink publishes beside its mask (a style, a STAC Item, QA files)
    follows the mask's rule: nothing appears under a final name until the
    mask does, and an aborted run leaves nothing.

    Args:
        finals: the final paths; ``temp(final)`` is where each is written.
    """

    def __init__(self, *finals: Path) -> None:
        self._tmp = {p: temp_name(p, ".part") for p in finals}

    def temp(self, final: Path) -> Path:
        """Where ``final`` is written until :meth:`publish`."""
        return self._tmp[final]

    def publish(self) -> tuple[Path, ...]:
        """Move every file into place; returns their final paths."""
        try:
            for final, tmp in self._tmp.items():
                os.replace(tmp, final)
        finally:
            staging.release(*self._tmp.values())
        return tuple(self._tmp)

    def remove(self) -> None:
        """Delete the temporary files (the final names are never touched)."""
        for tmp in self._tmp.values():
            tmp.unlink(missing_ok=True)
        staging.release(*self._tmp.values())


def stale_temp_files(final: Path) -> list[Path]:
    """The temporary files and folders of ``final`` that no live run holds: what killed runs left.

    Only names made by :func:`temp_name` match, and never a symbolic link,
    so nothing a user made is ever listed; the lock files of the leftovers
    come last. See :mod:`tiling.core.staging` for how a leftover is told
    from live work.
    """
    return staging.stale_entries(final.parent, f".{final.name}.")


@dataclass(frozen=True)
class ModelProvenance:
    """Which model made a mask, for the metadata written beside it (a STAC Item, a SEG's algorithm).

    Attributes:
        model: the network, e.g. ``"DeepLabV3-ResNet101"``.
        weights: the weights file's name, or None for a random initialisation.
        weights_sha256: SHA-256 of the weights file, hex, or None.
        software: the producing software and version, e.g. ``"tilewise 0.1.0"``.
    """

    model: str
    weights: str | None = None
    weights_sha256: str | None = None
    software: str = "tilewise"


@dataclass(frozen=True)
class SinkRequest:
    """What a run asks of a sink, whatever the format.

    Attributes:
        class_names: one name per class; label k is ``class_names[k]``.
        save_probs: also store per-class probabilities, where the format can.
        allow_unreferenced: accept a source that does not say where it lies
            (a GeoTIFF without CRS); refused by default, since such a mask
            cannot be placed next to anything.
        options: the output format's options: a mapping of the values given
            (``{"seg_type": "labelmap"}``), which :func:`tiling.formats.open_sink`
            checks against the chosen format and resolves into its
            ``sink_options`` dataclass, or that dataclass itself.
        provenance: the model that made the mask, or None when unknown.
        plan: the tile plan (tile, overlap, edge, blend), which a sink that can
            records with the mask (a COG's tags) so seam QA can be redone later.
        qa: also publish the seam QA files beside the mask (sinks with
            ``supports_qa``; see :mod:`tiling.core.qa`).
        class_colors: one RGB colour per class for the mask's colour table and
            styles; None for the default palette (:func:`tiling.core.labels.class_color`).
    """

    class_names: tuple[str, ...]
    save_probs: bool = False
    allow_unreferenced: bool = False
    options: Any = None
    provenance: ModelProvenance | None = None
    plan: TilePlan | None = None
    qa: bool = False
    class_colors: tuple[tuple[int, int, int], ...] | None = None


class Sink(ABC):
    """Base of every mask writer.

    A sink receives finished blocks from the stitcher (:meth:`write`) and
    makes its outputs appear under their final names only when complete
    (:meth:`finalize`); :meth:`abort` removes every temporary file. Writing
    after either raises :class:`SinkFinalizedError`.

    Subclasses set ``path``, ``shape`` (the scene's axes) and ``block`` (the
    output block the stitcher should finish at a time: the storage chunk),
    and ``probs`` when the probabilities go to a file of their own.
    """

    path: Path
    shape: tuple[int, ...]
    block: tuple[int, ...]
    #: Where the probabilities are published when they are a file of their own; None otherwise.
    probs: Path | None = None
    #: Whether this sink publishes seam QA files (``SinkRequest.qa``).
    supports_qa: ClassVar[bool] = False
    #: Whether the mask goes inside the sink's own source (an OME-Zarr label image in the image's
    #: ``labels`` group, the image's arrays untouched): a run allows that one output inside its input.
    into_source: bool = False
    _closed: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Wrap a subclass's ``__init__``, ``finalize`` and ``abort`` so that its temporaries are released.

        What a sink names with :func:`temp_name` while it is built, finalised
        or aborted is its own; those names are released
        (:func:`tiling.core.staging.release`) when ``finalize`` returns,
        when ``abort`` returns or raises, and when ``__init__`` raises (a
        ``finalize`` that raises is followed by ``abort``), so no lock file
        outlives a sink's work and no format has to remember to do it.
        """
        super().__init_subclass__(**kwargs)
        when = {"__init__": (False, True), "finalize": (True, False), "abort": (True, True)}
        for name, (on_return, on_error) in when.items():
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "releases_temporaries", False):
                setattr(cls, name, staging.releasing(method, on_return, on_error))

    def record_qa(self, disagreement: Disagreement) -> None:  # noqa: B027 - a hook most sinks ignore
        """Take the disagreement the stitcher measured, before :meth:`finalize` (a no-op by default)."""

    @classmethod
    def planned_outputs(cls, path: Path, request: SinkRequest) -> tuple[Path, ...]:
        """Every path :meth:`finalize` would publish for a mask at ``path``, mask first.

        A run checks all of them before any work (none may be an input, an
        output of another scene, or a file tilewise did not write).
        """
        return (path,)

    @classmethod
    @abstractmethod
    def for_source(cls, path: Path, source: Source, request: SinkRequest) -> Sink:
        """A sink for ``source``'s mask at ``path``.

        Raises:
            ConfigError: if this format cannot hold a mask of that source
                (the message says which format can).
            SinkError: if ``path`` cannot be written.
        """

    @abstractmethod
    def write(self, window: Window, labels: np.ndarray, probs: np.ndarray | None) -> None:
        """Write one finished block: labels (*window.shape) uint8, probs (K, *window.shape) or None."""

    @abstractmethod
    def finalize(self) -> tuple[Path, ...]:
        """Complete the outputs and move them to their final names.

        Returns:
            Every path published, the mask first.

        Raises:
            SinkFinalizedError: if called twice or after :meth:`abort`.
        """

    @abstractmethod
    def abort(self) -> None:
        """Remove every temporary file; the final names are never touched."""

    def _check_block(self, window: Window, labels: np.ndarray) -> None:
        """Refuse writes after finalize/abort, outside the scene, or of the wrong shape.

        Raises:
            SinkFinalizedError: after :meth:`finalize` or :meth:`abort`.
            SinkError: if the window leaves the scene or labels do not fit it.
        """
        if self._closed:
            raise SinkFinalizedError(f"{self.path}: written to after it was finalised")
        if window.ndim != len(self.shape) or any(
            s < 0 or e > n for s, e, n in zip(window.start, window.stop, self.shape)
        ):
            raise SinkError(f"{self.path}: window {window} is not inside the image of shape {self.shape}")
        if labels.shape != window.shape:
            raise SinkError(f"{self.path}: labels have shape {labels.shape}, window {window} needs {window.shape}")

    def _begin_finalize(self) -> None:
        """Mark the sink closed, refusing a second finalize.

        Raises:
            SinkFinalizedError: if it was finalised or aborted before.
        """
        if self._closed:
            raise SinkFinalizedError(f"{self.path}: finalised twice")
        self._closed = True


@dataclass(frozen=True)
class Format:
    """One format's entry in the registry.

    Attributes:
        name: the registry key, e.g. ``"geotiff"``; what ``SourceSpec.format`` holds.
        title: how the README and messages call it, e.g. ``"GeoTIFF / COG"``.
        sniff: whether a path looks like this format (cheap: a suffix, a
            marker file, a magic number); formats are asked in ``priority`` order.
        open_source: opens ``(path, options)`` as a :class:`Source`; None for write-only formats.
        options: the frozen dataclass of reader options; its field names
            are the option names users pass (``bands``, ``series``, ``level``).
        sink_options: the frozen dataclass of writer options (``seg_type``),
            carried to the sink in :attr:`SinkRequest.options`.
        sink: returns the class that writes masks in this format (imported
            only when called), or None for a read-only format.
        output_name: what ``--format`` calls the mask format (``cog``), defaults to ``name``.
        suffixes: output suffixes that select this sink (``.tif``), lower case.
        extra: the pip extra that installs this format's libraries, if any.
        priority: lower sniffs first; a catch-all format (GDAL) goes last.
        owns: whether an existing path is a mask this format's sink wrote
            (it carries tilewise's mark); ``--overwrite`` replaces nothing else.
        open_labels: opens ``(path, label_options, image)`` as the labels of
            the source ``image``: a :class:`Source` with ``count == 1`` and
            ``image``'s shape, whose values are raw labels (integers); None
            when the format holds no labels.
        label_options: the frozen dataclass of label reader options.
        scenes: for a dataset layout (a folder of image/mask pairs), lists its
            ``(image, labels)`` paths; each is then opened through the registry.
    """

    name: str
    title: str
    sniff: Callable[[Path], bool]
    open_source: Callable[[Path, Any], Source] | None = None
    options: type = NoOptions
    sink: Callable[[], type[Sink]] | None = None
    output_name: str = ""
    suffixes: tuple[str, ...] = ()
    extra: str | None = None
    priority: int = 50
    sink_options: type = NoOptions
    owns: Callable[[Path], bool] | None = None
    open_labels: Callable[[Path, Any, Source], Source] | None = None
    label_options: type = NoOptions
    scenes: Callable[[Path], list[tuple[Path, Path]]] | None = None

    @property
    def writes(self) -> str:
        """The ``--format`` value of this format's mask, or ``""`` if it writes none."""
        return (self.output_name or self.name) if self.sink is not None else ""

    def option_names(self) -> Sequence[str]:
        """The reader options this format accepts."""
        return tuple(self.options.__dataclass_fields__)  # type: ignore[attr-defined]

    def sink_option_names(self) -> Sequence[str]:
        """The writer options this format's sink accepts (none for a read-only format)."""
        if self.sink is None:
            return ()
        return tuple(self.sink_options.__dataclass_fields__)  # type: ignore[attr-defined]

    def label_option_names(self) -> Sequence[str]:
        """The label reader options this format accepts."""
        return tuple(self.label_options.__dataclass_fields__)  # type: ignore[attr-defined]
