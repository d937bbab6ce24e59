"""The format registry: which formats tilewise reads and writes, found by name or by sniffing a path.

Each entry maps a name to ``"module:FORMAT"``, a :class:`~tiling.formats.base.Format`
record imported only when first needed, so a GeoTIFF user never imports
pydicom or zarr. Adding a format is one folder under ``tiling/formats/`` and
one line in :data:`BUILTIN` (or a :func:`register` call from outside).

A :class:`SourceSpec` ``(path, format, options)`` reopens a source in another
process (a Ray worker). When pickled it carries its format's locator, so a
format registered at run time is found there too.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiling.errors import ConfigError, SourceOpenError
from tiling.formats.base import Format, NoOptions, Sink, SinkRequest, Source, SourceLimits

__all__ = [
    "BUILTIN",
    "DEFAULT_LIMITS",
    "SourceLimits",
    "SourceSpec",
    "all_formats",
    "get_format",
    "label_options",
    "list_scenes",
    "natural_output",
    "open_labels",
    "open_sink",
    "open_source",
    "output_format",
    "register",
    "sink_options",
    "sniff",
    "sniff_labels",
    "source_options",
    "spec_of",
    "unregister",
]

#: The formats that ship with tilewise: name -> "module:attribute" of its Format record.
BUILTIN: dict[str, str] = {
    "geotiff": "tiling.formats.geotiff:FORMAT",
    "dicom": "tiling.formats.dicom:FORMAT",
    "zarr": "tiling.formats.zarr:FORMAT",
    "vector": "tiling.formats.vector:FORMAT",
    "pairs": "tiling.formats.pairs:FORMAT",
}

#: The size limits :func:`open_source` checks unless told otherwise.
DEFAULT_LIMITS = SourceLimits()

_locators: dict[str, str] = dict(BUILTIN)
_loaded: dict[str, Format] = {}


def register(locator: str) -> Format:
    """Register the Format record at ``locator`` (``"package.module:ATTRIBUTE"``).

    The module must be importable wherever sources are reopened (Ray
    workers), so a format defined in a script's ``__main__`` will not do.
    A format of the same name is replaced.

    Returns:
        The registered record.
    """
    fmt = _import(locator)
    _locators[fmt.name] = locator
    _loaded[fmt.name] = fmt
    return fmt


def unregister(name: str) -> None:
    """Forget format ``name`` (built-in formats come back only by :func:`register`)."""
    _locators.pop(name, None)
    _loaded.pop(name, None)


def _import(locator: str) -> Format:
    module, _, attr = locator.partition(":")
    fmt = getattr(importlib.import_module(module), attr or "FORMAT")
    if not isinstance(fmt, Format):
        raise TypeError(f"{locator} is a {type(fmt).__name__}, not a tiling.formats.base.Format")
    return fmt


def get_format(name: str | Format) -> Format:
    """The registered format called ``name``.

    Raises:
        ConfigError: if no format of that name is registered (naming those that are).
    """
    if isinstance(name, Format):
        return name
    fmt = _loaded.get(name)
    if fmt is None:
        locator = _locators.get(name)
        if locator is None:
            raise ConfigError(f"format: {name!r} is not one of {', '.join(sorted(_locators))}")
        fmt = _loaded[name] = _import(locator)
    return fmt


def all_formats() -> list[Format]:
    """Every registered format, in sniffing order."""
    return sorted((get_format(n) for n in list(_locators)), key=lambda f: (f.priority, f.name))


def sniff(path: str | Path) -> Format:
    """The format whose files look like ``path``.

    Raises:
        SourceOpenError: if no registered format recognises it.
    """
    path = Path(path)
    for fmt in all_formats():
        if fmt.open_source is not None and fmt.sniff(path):
            return fmt
    raise SourceOpenError(f"{path}: not a format tilewise reads ({', '.join(f.title for f in all_formats())})")


def source_options(fmt: Format | str, given: Mapping[str, Any] | None = None) -> Any:
    """Build ``fmt``'s reader options from ``given``, ignoring None values.

    Raises:
        ConfigError: if an option is not one ``fmt`` accepts; the message
            names the formats that do accept it.
    """
    fmt = get_format(fmt)
    values = {k: v for k, v in (given or {}).items() if v is not None}
    accepted = set(fmt.option_names())
    for key in values:
        if key not in accepted:
            takers = [f.title for f in all_formats() if key in f.option_names()]
            where = f"it applies to {', '.join(takers)} sources only" if takers else "no format takes it"
            flag = "--" + key.replace("_", "-")
            raise ConfigError(f"option {key} ({flag}) does not apply to a {fmt.title} source; {where}")
    try:
        return fmt.options(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{fmt.name} options: {e}") from e


def sink_options(fmt: Format | str, given: Any = None) -> Any:
    """Build the writer options of ``fmt``'s sink from ``given``, ignoring None values.

    Args:
        fmt: the output format.
        given: a mapping of option values by name, an instance of the
            format's ``sink_options`` dataclass (returned as it is), or None.

    Raises:
        ConfigError: if an option is not one ``fmt``'s sink accepts (the
            message names the output formats that do), or has a bad value.
    """
    fmt = get_format(fmt)
    if isinstance(given, fmt.sink_options):
        return given
    values = {k: v for k, v in (given or {}).items() if v is not None}
    accepted = set(fmt.sink_option_names())
    for key in values:
        if key not in accepted:
            takers = [f"{f.title} ({f.writes})" for f in all_formats() if key in f.sink_option_names()]
            where = f"it applies to {', '.join(takers)} output only" if takers else "no output format takes it"
            flag = "--" + key.replace("_", "-")
            raise ConfigError(f"option {key} ({flag}) does not apply to a {fmt.writes or fmt.name} output; {where}")
    try:
        return fmt.sink_options(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{fmt.writes or fmt.name} options: {e}") from e


def _missing_extra(fmt: Format, what: str, e: ModuleNotFoundError) -> SourceOpenError:
    extra = f"pip install 'tilewise[{fmt.extra}]'" if fmt.extra else f"pip install {e.name}"
    return SourceOpenError(f"{what}: {fmt.title} needs the {e.name} package, which is not installed; {extra}")


def open_source(
    path: str | Path,
    format: str | Format | None = None,
    *,
    limits: SourceLimits | None = DEFAULT_LIMITS,
    **options: Any,
) -> Source:
    """Open ``path`` with the reader of its format, and check what it claims against ``limits``.

    Args:
        path: the image file, folder or store.
        format: the registry name of the format; sniffed from the path when None.
        limits: the largest pixel count, band count and storage chunk accepted,
            checked right after opening so that no plan is ever made of an
            absurd size claim; None skips the check (a worker reopening a
            source the driver already checked).
        options: the format's reader options (``bands`` for GeoTIFF,
            ``series`` for DICOM, ``level`` for OME-Zarr...); None values are ignored.

    Raises:
        SourceOpenError: if the path is missing, of no known format, unreadable,
            or its format's libraries are not installed.
        SourceTooLargeError: if it claims more than ``limits`` allow.
        ConfigError: if an option does not apply to the format or has a bad value.
    """
    path = Path(path)
    fmt = get_format(format) if format is not None else sniff(path)
    if fmt.open_source is None:
        raise ConfigError(f"{path}: {fmt.title} is an output format only")
    opts = options.pop("options", None) or source_options(fmt, options)
    try:
        source = fmt.open_source(path, opts)
    except ModuleNotFoundError as e:
        raise _missing_extra(fmt, str(path), e) from e
    if limits is not None:
        try:
            limits.check(source)
        except BaseException:
            source.close()
            raise
    return source


def sniff_labels(path: str | Path) -> Format:
    """The format that reads ``path`` as labels.

    Raises:
        SourceOpenError: if the path is missing or no format reads labels from it.
    """
    path = Path(path)
    if not path.exists() and "://" not in str(path):
        raise SourceOpenError(f"{path}: no such labels file or folder")
    for fmt in all_formats():
        if fmt.open_labels is not None and fmt.sniff(path):
            return fmt
    readers = ", ".join(f.title for f in all_formats() if f.open_labels is not None)
    raise SourceOpenError(f"{path}: not a labels format tilewise reads ({readers})")


def label_options(fmt: Format | str, given: Mapping[str, Any] | None = None) -> Any:
    """Build ``fmt``'s label reader options from ``given``, dropping None values and
    options the format does not take (label options are shared by every format
    in a config, so a vector attribute name is simply unused by a raster).

    Raises:
        ConfigError: if a value is bad.
    """
    fmt = get_format(fmt)
    accepted = set(fmt.label_option_names())
    values = {k: v for k, v in (given or {}).items() if v is not None and k in accepted}
    try:
        return fmt.label_options(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{fmt.name} label options: {e}") from e


def open_labels(
    path: str | Path,
    image: Source,
    format: str | Format | None = None,
    *,
    limits: SourceLimits | None = DEFAULT_LIMITS,
    **options: Any,
) -> Source:
    """Open ``path`` as the labels of ``image``: a one-band source on ``image``'s pixel grid.

    Args:
        path: a label raster, vector file, DICOM SEG or Zarr label image.
        image: the opened image source the labels belong to.
        format: the registry name of the labels' format; sniffed when None.
        limits: checked as :func:`open_source` checks images (a label file's
            storage chunk is read whole, however small the file); None skips
            the check (a worker reopening labels the driver checked).
        options: label reader options (``resample``, ``attribute``, ``value_map``...);
            those a format does not take are ignored.

    Raises:
        SourceOpenError: if the labels cannot be read.
        SourceTooLargeError: if they claim more than ``limits`` allow.
        ConfigError: if they do not fit the image (another grid, a missing attribute...).
    """
    path = Path(path)
    fmt = get_format(format) if format is not None else sniff_labels(path)
    if fmt.open_labels is None:
        raise ConfigError(f"{path}: {fmt.title} holds no labels")
    opts = options.pop("options", None) or label_options(fmt, options)
    try:
        labels = fmt.open_labels(path, opts, image)
    except ModuleNotFoundError as e:
        raise _missing_extra(fmt, str(path), e) from e
    if limits is not None:
        try:
            limits.check(labels)
        except BaseException:
            labels.close()
            raise
    return labels


def list_scenes(path: str | Path) -> list[tuple[Path, Path]] | None:
    """The ``(image, labels)`` pairs of a dataset layout at ``path``, or None if it is not one."""
    path = Path(path)
    for fmt in all_formats():
        if fmt.scenes is not None and fmt.sniff(path):
            return fmt.scenes(path)
    return None


@dataclass(frozen=True)
class SourceSpec:
    """What a worker needs to reopen a source: small and picklable.

    Attributes:
        path: the source's path.
        format: its format's registry name.
        options: the format's resolved reader options.
    """

    path: str
    format: str
    options: Any = dataclasses.field(default_factory=NoOptions)

    def open(self) -> Source:
        """Open the source this spec describes (its size was checked when the spec was made)."""
        return open_source(self.path, self.format, limits=None, options=self.options)

    def open_labels(self, image: Source) -> Source:
        """Open the labels this spec describes, on ``image``'s grid (their size was checked when the spec was made)."""
        return open_labels(self.path, image, self.format, limits=None, options=self.options)

    def __reduce__(self) -> tuple[Any, ...]:
        # Carry the locator so a format registered at run time is found in the worker.
        return (_rebuild_spec, (self.path, self.format, self.options, _locators.get(self.format)))


def _rebuild_spec(path: str, format: str, options: Any, locator: str | None) -> SourceSpec:
    if format not in _locators and locator is not None:
        register(locator)
    return SourceSpec(path, format, options)


def spec_of(source: Source) -> SourceSpec:
    """The spec that reopens ``source``, from any working directory.

    Local paths become absolute: a Ray worker does not share the driver's
    working directory. URLs (``s3://...``) are kept as they are.
    """
    path = str(source.path)
    if "://" not in path:
        path = str(Path(path).absolute())
    return SourceSpec(path, source.format, source.options)


def output_format(out: str | Path, requested: str | Format | None = None) -> Format:
    """The format of a mask at ``out``: the one ``requested`` (by its ``--format``
    name or registry name), else the one whose suffixes match ``out``, else, for
    an ``out`` with no suffix of its own, the one whose suffixes match the
    nearest folder above it that has one (``image.ome.zarr/labels/mask`` is Zarr).

    Raises:
        ConfigError: if neither names a format that writes masks.
    """
    out = Path(out)
    writers = [f for f in all_formats() if f.sink is not None]
    names = ", ".join(f.writes for f in writers)
    if requested is not None:
        if isinstance(requested, Format):
            return requested
        text = str(requested).strip().lower()
        for f in writers:
            if text in (f.writes, f.name):
                return f
        raise ConfigError(f"format: {requested!r} is not one of {names}")
    suffix = "".join(out.suffixes[-1:]).lower()
    for f in writers:
        if suffix in f.suffixes:
            return f
    if not suffix:
        for folder in out.parents:
            if folder.suffix:
                found = [f for f in writers if folder.suffix.lower() in f.suffixes]
                if found:
                    return found[0]
                break
    known = ", ".join(f"{f.suffixes[0]} ({f.writes})" for f in writers if f.suffixes)
    raise ConfigError(
        f"{out}: cannot tell the output format from {out.suffix or 'no extension'!r}; use {known}, or --format"
    )


def natural_output(source_format: str | Format) -> Format:
    """The mask format a batch picks for a source of ``source_format``: its own, else OME-Zarr's."""
    fmt = get_format(source_format)
    if fmt.sink is not None:
        return fmt
    return output_format("mask", "zarr")


def open_sink(out: str | Path, source: Source, fmt: str | Format | None, request: SinkRequest) -> Sink:
    """Open the sink for ``source``'s mask at ``out``, in ``fmt`` or the format ``out``'s suffix names.

    ``request.options`` is checked against the format's writer options and
    resolved (see :func:`sink_options`) before the sink sees it.

    Raises:
        ConfigError: if the format cannot hold this source's mask, or an
            option does not apply to it.
        SinkError: if ``out`` cannot be written.
        SourceOpenError: if the format's libraries are not installed.
    """
    out = Path(out)
    f = output_format(out, fmt)
    assert f.sink is not None  # output_format returns writers only
    request = dataclasses.replace(request, options=sink_options(f, request.options))
    try:
        return f.sink().for_source(out, source, request)
    except ModuleNotFoundError as e:
        raise _missing_extra(f, str(out), e) from e
