"""DICOM on pydicom and highdicom: CT/MR series, enhanced multi-frame volumes and
whole-slide images in, DICOM SEG out.

Needs the ``medical`` extra. Nothing here imports pydicom until a file is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from tiling.errors import ConfigError
from tiling.formats.base import Format
from tiling.options import lookup_option

if TYPE_CHECKING:
    from tiling.formats.base import Sink, Source

__all__ = [
    "DEFAULT_SEG_CREATOR",
    "FORMAT",
    "SPACING_TOLERANCE",
    "DicomOptions",
    "DicomSegOptions",
    "SegType",
    "person_name",
]

#: A step may differ from the median step by this fraction before it is a gap;
#: scanners round positions to ~0.01 mm, a missing slice is a 100 % deviation.
SPACING_TOLERANCE = 0.05
#: A SEG's ContentCreatorName when none is given: Type 2 in the Segmentation IOD, and dcmqi
#: warns when it is absent. A person name (family ``tilewise``, given ``automatic``), since
#: the content was made by software; the algorithm itself is named in each segment.
DEFAULT_SEG_CREATOR = "tilewise^automatic"
#: DICOM PN: at most 3 component groups (alphabetic=ideographic=phonetic) of at most
#: 5 components (family^given^middle^prefix^suffix) and 64 characters each (PS3.5 6.2).
_PN_GROUPS, _PN_COMPONENTS, _PN_GROUP_CHARS = 3, 5, 64


def person_name(value: str, field: str = "seg_creator") -> str:
    """``value`` checked as a DICOM person name (PN); a name of one component gets its trailing caret.

    ``"Bono"`` and ``"Bono^"`` are the same PN (trailing carets may be
    omitted); the caret is added because readers (and highdicom) take a
    caret-less name for a likely mistake.

    Raises:
        ConfigError: if ``value`` is empty, holds a backslash (the DICOM value
            separator) or a control character, or has too many component
            groups, components, or characters in a group.
    """
    text = str(value)
    fix = "give a DICOM person name such as 'Doe^Jane' (Family^Given)"
    if not text.strip():
        raise ConfigError(f"{field}: an empty name; {fix}")
    bad = next((c for c in text if c == "\\" or ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise ConfigError(f"{field}: {text!r} holds {bad!r}, which a DICOM person name cannot; {fix}")
    groups = text.split("=")
    if len(groups) > _PN_GROUPS:
        raise ConfigError(f"{field}: {text!r} has {len(groups)} '='-separated groups, a person name at most 3; {fix}")
    for group in groups:
        if group.count("^") >= _PN_COMPONENTS:
            raise ConfigError(
                f"{field}: {group!r} has {group.count('^') + 1} components, a person name at most 5 "
                "(Family^Given^Middle^Prefix^Suffix)"
            )
        if len(group) > _PN_GROUP_CHARS:
            raise ConfigError(f"{field}: {group[:20]!r}... has {len(group)} characters, a person name at most 64")
    if "^" not in text:
        groups[0] += "^"
    return "=".join(groups)


@dataclass(frozen=True)
class DicomOptions:
    """Reader options of a DICOM source.

    Attributes:
        series: the SeriesInstanceUID to read when a folder holds several.
        spacing_tolerance: allowed relative deviation of a slice step from the median step.
    """

    series: str | None = None
    spacing_tolerance: float = SPACING_TOLERANCE


class SegType(str, Enum):
    """Which DICOM Segmentation the labels become.

    ``binary``: Segmentation Storage, one 1-bit frame per segment and slice;
    what every SEG reader (3D Slicer, OHIF, dcmqi, dciodvfy) understands.
    ``labelmap``: Label Map Segmentation Storage (Supplement 243, 2024), one
    8-bit frame per slice holding segment numbers; smaller, newer, and not
    yet read everywhere.
    """

    BINARY = "binary"
    LABELMAP = "labelmap"


@dataclass(frozen=True)
class DicomSegOptions:
    """Writer options of a DICOM SEG mask.

    Attributes:
        seg_type: :class:`SegType` (or its name); BINARY by default, the
            widest reader support.
        seg_codes: a JSON or YAML file giving each class's segmented property
            category and type codes (see :mod:`tiling.formats.dicom.codes`);
            generic "Tissue" codes when None.
        seg_creator: the SEGs' ContentCreatorName, a DICOM person name
            (``Family^Given``); :data:`DEFAULT_SEG_CREATOR` by default.
    """

    seg_type: SegType | str = SegType.BINARY
    seg_codes: str | None = None
    seg_creator: str = DEFAULT_SEG_CREATOR

    def __post_init__(self) -> None:
        object.__setattr__(self, "seg_type", lookup_option(self.seg_type, SegType, "seg_type"))
        object.__setattr__(self, "seg_creator", person_name(self.seg_creator))
        if self.seg_codes is not None and not Path(self.seg_codes).is_file():
            raise ConfigError(f"seg_codes: {self.seg_codes}: no such file; give a JSON or YAML file of class codes")


def _sniff(path: Path) -> bool:
    """A folder, a ``.dcm`` file, or a file with the ``DICM`` preamble."""
    if path.is_dir() or path.suffix.lower() == ".dcm":
        return True
    if path.is_file():
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    return False


def _open(path: Path, options: DicomOptions) -> Source:
    from tiling.formats.dicom.series import open_dicom

    return open_dicom(path, series_uid=options.series, spacing_tolerance=options.spacing_tolerance)


def _owns(path: Path) -> bool:
    """A DICOM file whose Manufacturer is tilewise (what the SEG sink writes)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Manufacturer"])
    except (InvalidDicomError, OSError, EOFError, ValueError):
        return False
    return str(ds.get("Manufacturer", "")) == "tilewise"


def _open_labels(path: Path, options: object, image: Source) -> Source:
    from tiling.formats.dicom.seglabels import DicomSegLabels

    return DicomSegLabels(path, image)


def _sink() -> type[Sink]:
    from tiling.formats.dicom.seg import DicomSegSink

    return DicomSegSink


FORMAT = Format(
    name="dicom",
    title="DICOM",
    sniff=_sniff,
    open_source=_open,
    options=DicomOptions,
    sink=_sink,
    output_name="dicom-seg",
    suffixes=(".dcm",),
    extra="medical",
    priority=20,
    sink_options=DicomSegOptions,
    owns=_owns,
    open_labels=_open_labels,
)
