"""DICOM on pydicom and highdicom: CT/MR series, enhanced multi-frame volumes and
whole-slide images in, DICOM SEG out.

Needs the ``medical`` extra. Nothing here imports pydicom until a file is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tiling.formats.base import Format

if TYPE_CHECKING:
    from tiling.formats.base import Sink, Source

__all__ = ["FORMAT", "SPACING_TOLERANCE", "DicomOptions"]

#: A step may differ from the median step by this fraction before it is a gap;
#: scanners round positions to ~0.01 mm, a missing slice is a 100 % deviation.
SPACING_TOLERANCE = 0.05


@dataclass(frozen=True)
class DicomOptions:
    """Reader options of a DICOM source.

    Attributes:
        series: the SeriesInstanceUID to read when a folder holds several.
        spacing_tolerance: allowed relative deviation of a slice step from the median step.
    """

    series: str | None = None
    spacing_tolerance: float = SPACING_TOLERANCE


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
    open_labels=_open_labels,
)
