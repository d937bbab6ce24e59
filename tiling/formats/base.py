"""What every format implements: the Source protocol, the Sink base class and the Format record.

A format is one folder under ``tiling/formats/`` whose ``__init__.py``
defines a :class:`Format` record: its name, how to recognise its files,
the reader options it accepts, how to open a source and which sink writes
its masks. The registry (:mod:`tiling.formats`) imports those records
lazily. Nothing here imports a format or the registry, so formats depend on
this module and never on each other.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from tiling.core.windows import Window, clip, intersects
from tiling.errors import ConfigError, SinkError, SinkFinalizedError
from tiling.formats.reference import Reference

if TYPE_CHECKING:  # typing.Self is 3.11+; annotations are strings at run time
    from typing_extensions import Self

__all__ = [
    "Format",
    "NoOptions",
    "Sink",
    "SinkRequest",
    "Source",
    "SourceBase",
    "check_label_shape",
    "check_writable",
    "empty_read",
]


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


@dataclass(frozen=True)
class SinkRequest:
    """What a run asks of a sink, whatever the format.

    Attributes:
        class_names: one name per class; label k is ``class_names[k]``.
        save_probs: also store per-class probabilities, where the format can.
        allow_unreferenced: accept a source that does not say where it lies
            (a GeoTIFF without CRS); refused by default, since such a mask
            cannot be placed next to anything.
    """

    class_names: tuple[str, ...]
    save_probs: bool = False
    allow_unreferenced: bool = False


class Sink(ABC):
    """Base of every mask writer.

    A sink receives finished blocks from the stitcher (:meth:`write`) and
    makes its outputs appear under their final names only when complete
    (:meth:`finalize`); :meth:`abort` removes every temporary file. Writing
    after either raises :class:`SinkFinalizedError`.

    Subclasses set ``path``, ``shape`` (the scene's axes) and ``block`` (the
    output block the stitcher should finish at a time: the storage chunk).
    """

    path: Path
    shape: tuple[int, ...]
    block: tuple[int, ...]
    _closed: bool = False

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
        sink: returns the class that writes masks in this format (imported
            only when called), or None for a read-only format.
        output_name: what ``--format`` calls the mask format (``cog``), defaults to ``name``.
        suffixes: output suffixes that select this sink (``.tif``), lower case.
        extra: the pip extra that installs this format's libraries, if any.
        priority: lower sniffs first; a catch-all format (GDAL) goes last.
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

    def label_option_names(self) -> Sequence[str]:
        """The label reader options this format accepts."""
        return tuple(self.label_options.__dataclass_fields__)  # type: ignore[attr-defined]
