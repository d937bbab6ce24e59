"""Pick and open the output sink for a source: COG, OME-Zarr or DICOM SEG.

The format follows ``--format`` or the output's extension: ``.tif``/``.tiff``
-> Cloud-Optimised GeoTIFF, ``.zarr`` -> OME-Zarr, ``.dcm`` -> DICOM SEG.
The DICOM and Zarr writers are imported only when used.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

from tiling import ConfigError, Source
from tiling.options import lookup_option

__all__ = ["OutputFormat", "open_sink", "output_format", "stitch_block"]

#: Stitcher block edge for sinks without a storage chunk of their own.
DEFAULT_BLOCK = 256


class OutputFormat(str, Enum):
    """The mask formats tilewise writes."""

    COG = "cog"
    OME_ZARR = "ome-zarr"
    DICOM_SEG = "dicom-seg"

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


_SUFFIXES = {
    ".tif": OutputFormat.COG,
    ".tiff": OutputFormat.COG,
    ".zarr": OutputFormat.OME_ZARR,
    ".dcm": OutputFormat.DICOM_SEG,
}


def output_format(out: Path, fmt: OutputFormat | str | None) -> OutputFormat:
    """The format named by ``fmt``, else implied by ``out``'s extension.

    Raises:
        ConfigError: if neither names a known format.
    """
    if fmt is not None:
        return lookup_option(fmt, OutputFormat, "format")
    try:
        return _SUFFIXES[out.suffix.lower()]
    except KeyError:
        raise ConfigError(
            f"{out}: cannot tell the output format from {out.suffix or 'no extension'!r}; "
            "use .tif (COG), .zarr (OME-Zarr) or .dcm (DICOM SEG), or --format"
        ) from None


def stitch_block(source: Source, fmt: OutputFormat) -> tuple[int, ...]:
    """The stitcher's output block: the sink's storage chunk where it has one."""
    shape = tuple(source.shape)
    if fmt is OutputFormat.OME_ZARR:
        return tuple(min(int(b), n) for b, n in zip(source.block_shape, shape))
    if len(shape) == 3:
        return (1, min(DEFAULT_BLOCK, shape[1]), min(DEFAULT_BLOCK, shape[2]))
    return (DEFAULT_BLOCK, DEFAULT_BLOCK)


def open_sink(out: Path, source: Source, fmt: OutputFormat, class_names: list[str], save_probs: bool) -> Any:
    """Open the sink for ``source``'s mask at ``out``.

    Raises:
        ConfigError: if the format cannot hold this source's mask (a DICOM SEG
            needs a DICOM source; a COG needs a 2-D image).
        SinkError: if ``out`` cannot be written.
    """
    geometry = getattr(source, "geometry", None)
    if fmt is OutputFormat.COG:
        from tiling.cog import CogSink

        georef = getattr(source, "georef", None)
        if len(source.shape) != 2 or georef is None:
            raise ConfigError(f"{out}: a GeoTIFF mask needs a 2-D georeferenced source; write .zarr or .dcm instead")
        return CogSink(out, source.shape, georef, class_names, save_probs, DEFAULT_BLOCK)
    if fmt is OutputFormat.DICOM_SEG:
        if geometry is None:
            raise ConfigError(
                f"{out}: a DICOM SEG must reference DICOM images, and {source.path} is not DICOM; write .zarr instead"
            )
        from tiling.dicom_seg import DicomSegSink

        return DicomSegSink(out, geometry, class_names)
    from tiling.zarr_io import OmeZarrSink, ZarrSource

    if isinstance(source, ZarrSource):
        return OmeZarrSink.like(out, source, class_names, save_probs=save_probs)
    return OmeZarrSink(
        out,
        source.shape,
        stitch_block(source, fmt),
        class_names=class_names,
        save_probs=save_probs,
        **_ome_transform(source),
    )


def _ome_transform(source: Source) -> dict:
    """OME scale/translation/units from a DICOM volume's geometry (mm), if any."""
    geometry = getattr(source, "geometry", None)
    spacing = getattr(geometry, "spacing", None)
    if spacing is None or len(spacing) != len(source.shape):
        return {}
    origin = getattr(geometry, "origin", None)
    axes = ("z", "y", "x")[-len(source.shape) :]
    return dict(scale=tuple(spacing), axes=axes, units=("millimeter",) * len(axes),
                translation=tuple(origin)[::-1] if origin is not None and len(origin) == 3 else None)  # fmt: skip
