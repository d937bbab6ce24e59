"""Zarr v2/v3 arrays and OME-Zarr 0.4/0.5 images in; OME-Zarr label images out, standalone or in the image's own ``labels`` group.

Needs the ``medical`` extra (zarr-python 3). Nothing here imports zarr until
a store is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tiling.formats.base import ComplexPart, Format
from tiling.options import lookup_option

if TYPE_CHECKING:
    from tiling.formats.base import Sink, Source

__all__ = ["FORMAT", "ZarrLabelOptions", "ZarrOptions"]

_MARKERS = (".zgroup", ".zarray", "zarr.json")


@dataclass(frozen=True)
class ZarrOptions:
    """Reader options of a Zarr store.

    Attributes:
        level: for OME-Zarr, the multiscale level (index into ``datasets``); 0 when None.
        array: for a plain group, the array's path inside it (needed when it holds several).
        axes: axis names of a plain array, e.g. ``("y", "x", "c")`` for interleaved RGB;
            from the metadata when None.
        complex: what to make of complex values (``abs``, ``real``, ``imag``,
            ``phase``); complex arrays are refused when None.
    """

    level: int | None = None
    array: str | None = None
    axes: tuple[str, ...] | None = None
    complex: ComplexPart | None = None

    def __post_init__(self) -> None:
        if self.axes is not None:
            object.__setattr__(self, "axes", tuple(self.axes))
        if self.complex is not None:
            object.__setattr__(self, "complex", lookup_option(self.complex, ComplexPart, "complex"))


@dataclass(frozen=True)
class ZarrLabelOptions:
    """Options of Zarr labels.

    Attributes:
        name: the label image in an OME-Zarr ``labels`` group; the first listed when None.
        level: the multiscale level; the image's level when None.
        array: for a plain group, the label array's path inside it.
    """

    name: str | None = None
    level: int | None = None
    array: str | None = None


def _sniff(path: Path) -> bool:
    return path.suffix == ".zarr" or any((path / m).exists() for m in _MARKERS)


def _open(path: Path, options: ZarrOptions) -> Source:
    from tiling.formats.zarr.reader import ZarrSource

    return ZarrSource(path, level=options.level, array=options.array, axes=options.axes, complex=options.complex)


def _owns(path: Path) -> bool:
    """A Zarr store whose root attributes carry tilewise's ``tilewise`` entry (v2 ``.zattrs`` or v3 ``zarr.json``)."""
    import json

    for name, key in ((".zattrs", None), ("zarr.json", "attributes")):
        try:
            attrs = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        if key is not None:
            attrs = attrs.get(key, {}) if isinstance(attrs, dict) else {}
        if isinstance(attrs, dict) and "tilewise" in attrs:
            return True
    return False


def _open_labels(path: Path, options: ZarrLabelOptions, image: Source) -> Source:
    from tiling.formats.zarr.labels import ZarrLabels

    return ZarrLabels(path, image, options)


def _sink() -> type[Sink]:
    from tiling.formats.zarr.writer import OmeZarrSink

    return OmeZarrSink


FORMAT = Format(
    name="zarr",
    title="Zarr",
    sniff=_sniff,
    open_source=_open,
    options=ZarrOptions,
    sink=_sink,
    output_name="ome-zarr",
    suffixes=(".zarr",),
    extra="medical",
    priority=10,
    owns=_owns,
    open_labels=_open_labels,
    label_options=ZarrLabelOptions,
)
