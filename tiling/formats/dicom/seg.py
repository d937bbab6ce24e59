"""DICOM SEG sink on highdicom: label masks of a DICOM volume or slide, streamed to disk.

highdicom builds a Segmentation from the whole pixel array at once, so the
blocks the stitcher hands over are first collected in a disk-backed
``numpy.memmap`` beside the output (RAM stays bounded while writing); at
:meth:`DicomSegSink.finalize` the array is encoded, saved under a temporary
name and renamed into place. Encoding holds the label array (one byte per
voxel) in memory once, plus highdicom's frames.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from tiling.core.labels import LABEL_NODATA
from tiling.core.windows import Window
from tiling.errors import ConfigError, SinkError
from tiling.formats.base import Sink, SinkRequest, Source, check_writable
from tiling.formats.reference import SlideGeometry, VolumeGeometry

__all__ = ["ALGORITHM_NAME", "DEFAULT_BLOCK", "DicomSegSink", "segment_numbers"]

log = logging.getLogger(__name__)

#: Recorded as the segments' AlgorithmName.
ALGORITHM_NAME = "tilewise DeepLabV3"
#: The stitcher's output block edge: the SEG is collected in a memmap, so any block works.
DEFAULT_BLOCK = 256
#: Generic codes used when a class has no entry in ``segment_codes``.
_DEFAULT_CATEGORY = codes.SCT.Tissue
_DEFAULT_TYPE = codes.SCT.Tissue


def _version() -> str:
    try:
        return metadata.version("tilewise")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


def segment_numbers(classes: int, background_class: int | None = None) -> np.ndarray:
    """Lookup (256,) uint8 from a class label to its segment number.

    Class k becomes segment k + 1, or k when ``background_class`` < k; the
    background class and :data:`LABEL_NODATA` (and any label >= ``classes``)
    become 0, "no segment".

    Raises:
        ConfigError: if there are more than 254 classes or the background class is out of range.
    """
    if not 0 < classes < LABEL_NODATA:
        raise ConfigError(f"class_names: {classes} classes; a uint8 label SEG holds 1 to {LABEL_NODATA - 1}")
    if background_class is not None and not 0 <= background_class < classes:
        raise ConfigError(f"background_class: {background_class} is not a class index 0 to {classes - 1}")
    lut = np.zeros(256, np.uint8)
    number = 0
    for k in range(classes):
        if k != background_class:
            number += 1
            lut[k] = number
    return lut


class DicomSegSink(Sink):
    """Write labels over a DICOM volume or slide as one DICOM Segmentation, via highdicom.

    The SEG is a LABELMAP segmentation (SOP class 1.2.840.10008.5.1.4.1.1.66.7,
    supported by highdicom >= 0.24; one frame per source slice, 8-bit segment
    numbers) by default; pass ``segmentation_type="BINARY"`` for viewers that
    only read the classic Segmentation Storage IOD. Each class is a segment
    whose label is the class name, AUTOMATIC, with the algorithm
    identification (name, version, family "Artificial Intelligence"). Frames
    reference the source instances they were derived from: one per slice of
    a series, the frames of a multi-frame file, or the tiles of a slide (the
    slide SEG reuses the slide's tiling). Pixels labelled
    :data:`LABEL_NODATA` and the optional background class are "no segment".
    Probabilities handed to :meth:`write` are ignored.

    Args:
        path: the output ``.dcm`` file.
        geometry: the source's :class:`VolumeGeometry` (files and frames of
            every slice) or :class:`SlideGeometry`.
        class_names: one name per class index.
        algorithm_name: recorded as AlgorithmName.
        algorithm_version: recorded as AlgorithmVersion; the tilewise version when None.
        background_class: class index written as "no segment", or None.
        segment_codes: per class name, (category, type) codes; generic
            "Tissue" codes otherwise.
        segmentation_type: ``"LABELMAP"`` or ``"BINARY"``.
        series_description: SeriesDescription of the new series.
        series_number: SeriesNumber of the new series.

    Raises:
        SinkError: if the output folder is missing or not writable.
        ConfigError: if the class list or segmentation type is unusable.
    """

    def __init__(
        self,
        path: str | Path,
        geometry: VolumeGeometry | SlideGeometry,
        class_names: Sequence[str],
        algorithm_name: str = ALGORITHM_NAME,
        algorithm_version: str | None = None,
        background_class: int | None = None,
        segment_codes: Mapping[str, tuple[Code, Code]] | None = None,
        segmentation_type: str = "LABELMAP",
        series_description: str = "tilewise segmentation",
        series_number: int = 300,
    ) -> None:
        self.path = Path(path)
        self.geometry = geometry
        self.shape = tuple(geometry.shape)
        self.block = tuple(
            1 if len(self.shape) == 3 and a == 0 else min(DEFAULT_BLOCK, n) for a, n in enumerate(self.shape)
        )
        self.class_names = list(class_names)
        self.algorithm_name = algorithm_name
        self.algorithm_version = algorithm_version or _version()
        self.background_class = background_class
        self.segment_codes = dict(segment_codes or {})
        self.segmentation_type = str(segmentation_type).upper()
        if self.segmentation_type not in ("LABELMAP", "BINARY"):
            raise ConfigError(f"segmentation_type: {segmentation_type!r} is not LABELMAP or BINARY")
        self.series_description = series_description
        self.series_number = series_number
        self._lut = segment_numbers(len(self.class_names), background_class)
        check_writable(self.path)
        tag = uuid.uuid4().hex[:8]
        self._mm_path = self.path.with_name(f".{self.path.name}.{tag}.labels.u8")
        self._tmp = self.path.with_name(f".{self.path.name}.{tag}.part.dcm")
        self._closed = False
        try:
            self._labels = np.memmap(self._mm_path, np.uint8, mode="w+", shape=self.shape)
        except OSError as e:
            raise SinkError(f"{self.path}: cannot create the label buffer {self._mm_path} ({e})") from e

    @classmethod
    def for_source(cls, path: Path, source: Source, request: SinkRequest) -> DicomSegSink:
        """A SEG referencing ``source``'s DICOM instances.

        Raises:
            ConfigError: if the source is not DICOM (a SEG must reference DICOM images).
        """
        ref = source.reference
        if not isinstance(ref, (VolumeGeometry, SlideGeometry)):
            raise ConfigError(
                f"{path}: a DICOM SEG must reference DICOM images, and {source.path} is not DICOM; write .zarr instead"
            )
        return cls(path, ref, request.class_names)

    def write(self, window: Window, labels: np.ndarray, probs: np.ndarray | None = None) -> None:
        """Store one block: labels (*window.shape) class indices, uint8; probs is ignored.

        Raises:
            SinkFinalizedError: after :meth:`finalize` or :meth:`abort`.
            SinkError: if the window leaves the image or labels have the wrong shape.
        """
        self._check_block(window, labels)
        self._labels[window.to_slices()] = self._lut[np.asarray(labels, np.uint8)]

    def _descriptions(self) -> list[hd.seg.SegmentDescription]:
        algorithm = hd.AlgorithmIdentificationSequence(
            name=self.algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=self.algorithm_version
        )
        out = []
        for k, name in enumerate(self.class_names):
            if k == self.background_class:
                continue
            category, kind = self.segment_codes.get(name, (_DEFAULT_CATEGORY, _DEFAULT_TYPE))
            out.append(
                hd.seg.SegmentDescription(
                    segment_number=int(self._lut[k]),
                    segment_label=name[:64],
                    segmented_property_category=category,
                    segmented_property_type=kind,
                    algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                    algorithm_identification=algorithm,
                )
            )
        return out

    def _sources_and_pixels(self) -> tuple[list[pydicom.Dataset], np.ndarray, bool]:
        """Source headers, the pixel array in their frame order, and whether to tile it."""
        g = self.geometry
        if isinstance(g, SlideGeometry):
            return [pydicom.dcmread(g.file, stop_before_pixels=True)], np.asarray(self._labels)[np.newaxis], True
        if len(set(g.files)) == 1 and len(g.files) > 1:  # one multi-frame file: pixel_array[i] is frame i
            frames = np.empty_like(np.asarray(self._labels))
            frames[list(g.frame_indices)] = self._labels
            return [pydicom.dcmread(g.files[0], stop_before_pixels=True)], frames, False
        return [pydicom.dcmread(f, stop_before_pixels=True) for f in g.files], np.asarray(self._labels), False

    def _build(self) -> hd.seg.Segmentation:
        sources, pixels, tiled = self._sources_and_pixels()
        return hd.seg.Segmentation(
            source_images=sources, pixel_array=pixels, segmentation_type=self.segmentation_type,
            segment_descriptions=self._descriptions(), series_instance_uid=hd.UID(),
            series_number=self.series_number, sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer="tilewise", manufacturer_model_name=self.algorithm_name,
            software_versions=self.algorithm_version, device_serial_number="0",
            series_description=self.series_description, omit_empty_frames=False,
            tile_pixel_array=tiled,
        )  # fmt: skip

    def finalize(self) -> tuple[Path, ...]:
        """Encode the SEG, save it under a temporary name and rename it to ``path``; returns ``(path,)``.

        Raises:
            SinkFinalizedError: if called twice or after abort.
            SinkError: if highdicom rejects the data or saving fails (temporary files are removed).
        """
        self._begin_finalize()
        try:
            self._labels.flush()
            seg = self._build()
            seg.save_as(self._tmp)
            os.replace(self._tmp, self.path)
        except (ValueError, TypeError, OSError, AttributeError) as e:
            raise SinkError(f"{self.path}: cannot write the DICOM SEG ({e})") from e
        finally:
            self._cleanup()
        log.info("wrote %s", self.path)
        return (self.path,)

    def abort(self) -> None:
        """Remove the label buffer and any temporary file; ``path`` is never touched."""
        self._closed = True
        self._cleanup()

    def _cleanup(self) -> None:
        labels = getattr(self, "_labels", None)
        if labels is not None:
            del self._labels
            del labels
        for p in (self._mm_path, self._tmp):
            p.unlink(missing_ok=True)
