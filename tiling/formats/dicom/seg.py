"""DICOM SEG sink on highdicom: label masks (and probabilities) of a DICOM volume or slide, streamed to disk.

highdicom builds a Segmentation from the whole pixel array at once, so the
blocks the stitcher hands over are first collected in disk-backed
``numpy.memmap`` buffers beside the output (RAM stays bounded while
writing). Their space is reserved when the sink opens (``posix_fallocate``),
so a full disk is a one-line :class:`SinkError` at the start instead of a
``SIGBUS`` when a page of a sparse file cannot be allocated mid-run. At
:meth:`DicomSegSink.finalize` the arrays are encoded, saved under temporary
names and renamed into place. Encoding holds the label array (one byte per
voxel) in memory once, plus highdicom's frames; the FRACTIONAL probabilities
(``save_probs``) are handed to highdicom as float32, four bytes per voxel
and class.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from tiling.core.labels import LABEL_NODATA, class_color
from tiling.core.windows import Window
from tiling.errors import ConfigError, SinkError
from tiling.formats.base import ModelProvenance, Sink, SinkRequest, Source, check_writable, temp_name
from tiling.formats.dicom import DEFAULT_SEG_CREATOR, DicomSegOptions, SegType, person_name
from tiling.formats.dicom.codes import load_segment_codes
from tiling.formats.dicom.codes import segment_codes as codes_per_class
from tiling.formats.reference import SlideGeometry, VolumeGeometry
from tiling.version import version

__all__ = ["ALGORITHM_NAME", "DEFAULT_BLOCK", "DicomSegSink", "probs_path_for", "segment_numbers"]

log = logging.getLogger(__name__)

#: Recorded as the segments' AlgorithmName.
ALGORITHM_NAME = "tilewise DeepLabV3"
#: The stitcher's output block edge: the SEG is collected in a memmap, so any block works.
DEFAULT_BLOCK = 256
#: MaximumFractionalValue of the probability SEG: probabilities are stored x255 in 8 bits.
FRACTIONAL_SCALE = 255


def probs_path_for(path: Path) -> Path:
    """Where ``save_probs`` writes the FRACTIONAL SEG next to mask ``path``: ``<stem>.probs.dcm``."""
    return path.with_name(f"{path.stem}.probs{path.suffix or '.dcm'}")


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


def _reserve(path: Path, shape: tuple[int, ...], owner: Path, what: str) -> np.memmap:
    """A uint8 memmap of ``shape`` at ``path`` whose disk space is allocated now.

    Raises:
        SinkError: if the file cannot be created or the disk has no room for
            it; nothing is left at ``path``.
    """
    nbytes = int(np.prod(shape, dtype=np.int64))
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise SinkError(f"{owner}: cannot create the {what} buffer {path} ({e.strerror})") from None
    try:
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, nbytes)
            else:  # pragma: no cover - macOS and Windows: sparse, as before
                os.ftruncate(fd, nbytes)
        finally:
            os.close(fd)
        return np.memmap(path, np.uint8, mode="r+", shape=shape)
    except OSError as e:
        path.unlink(missing_ok=True)
        raise SinkError(
            f"{owner}: no room for the {what} buffer ({nbytes / 2**20:.1f} MiB) in {path.parent} "
            f"({e.strerror}); free space there or write the mask elsewhere"
        ) from None


class DicomSegSink(Sink):
    """Write labels over a DICOM volume or slide as one DICOM Segmentation, via highdicom.

    The SEG is a BINARY segmentation (Segmentation Storage, the classic IOD
    every reader understands) by default, or a LABELMAP segmentation (Label
    Map Segmentation Storage, Supplement 243) with ``segmentation_type="LABELMAP"``.
    Class k is segment k + 1 (segments are numbered from 1); nodata and the
    optional background class are "no segment", which in a LABELMAP is the
    Pixel Padding Value 0, with no segment 0 described. Each segment's label
    is the class name, its recommended display colour (CIELab) the class
    colour of :func:`tiling.core.labels.class_color`, its category and type
    the codes given per class (generic SNOMED "Tissue" otherwise); it is
    AUTOMATIC, with the algorithm identification (name, version, family
    "Artificial Intelligence", the model and weights fingerprint as
    parameters). Frames reference the source instances they were derived
    from: one per slice of a series, the frames of a multi-frame file, or
    the tiles of a slide (the slide SEG reuses the slide's tiling).

    With ``save_probs`` the probabilities go to a second file,
    ``<stem>.probs.dcm``: a FRACTIONAL (PROBABILITY) SEG with one segment per
    class, probability x 255 in 8 bits.

    Args:
        path: the output ``.dcm`` file.
        geometry: the source's :class:`VolumeGeometry` (files and frames of
            every slice) or :class:`SlideGeometry`.
        class_names: one name per class index.
        algorithm_name: recorded as AlgorithmName.
        algorithm_version: recorded as AlgorithmVersion; the tilewise version when None.
        background_class: class index written as "no segment", or None.
        segment_codes: per class name (or ``"default"``), (category, type)
            codes; generic "Tissue" codes otherwise.
        segmentation_type: ``"BINARY"`` or ``"LABELMAP"`` (any case, or a :class:`SegType`).
        series_description: SeriesDescription of the new series.
        series_number: SeriesNumber of the new series (the probabilities get the next one).
        save_probs: also write the FRACTIONAL probability SEG.
        provenance: the model that made the mask, recorded as algorithm parameters.
        content_creator: ContentCreatorName of both SEGs, a DICOM person name;
            a name beyond ASCII makes the SEGs UTF-8 (SpecificCharacterSet ``ISO_IR 192``).

    Raises:
        SinkError: if the output folder is missing or not writable, or the
            disk has no room for the buffers.
        ConfigError: if the class list, codes or segmentation type is unusable.
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
        segmentation_type: str | SegType = SegType.BINARY,
        series_description: str = "tilewise segmentation",
        series_number: int = 300,
        save_probs: bool = False,
        provenance: ModelProvenance | None = None,
        content_creator: str = DEFAULT_SEG_CREATOR,
        class_colors: Sequence[tuple[int, int, int]] | None = None,
    ) -> None:
        self.path = Path(path)
        self.class_colors = list(class_colors) if class_colors is not None else None
        self.content_creator = person_name(content_creator, "content_creator")
        self.geometry = geometry
        self.shape = tuple(geometry.shape)
        self.block = tuple(
            1 if len(self.shape) == 3 and a == 0 else min(DEFAULT_BLOCK, n) for a, n in enumerate(self.shape)
        )
        self.class_names = list(class_names)
        self.algorithm_name = algorithm_name
        self.algorithm_version = algorithm_version or version()
        self.background_class = background_class
        self.segment_codes = dict(segment_codes or {})
        text = segmentation_type.value if isinstance(segmentation_type, SegType) else str(segmentation_type)
        if text.upper() not in ("LABELMAP", "BINARY"):
            raise ConfigError(f"segmentation_type: {segmentation_type!r} is not LABELMAP or BINARY")
        self.segmentation_type = text.upper()
        self.series_description = series_description
        self.series_number = series_number
        self.provenance = provenance
        self._lut = segment_numbers(len(self.class_names), background_class)
        self._codes = codes_per_class(self.class_names, self.segment_codes)
        check_writable(self.path)
        # one claimed temporary name (tiling.core.staging): its siblings share the lock, so a killed
        # run's buffers are found stale and removed by the next run, on any host
        self._tmp = temp_name(self.path, ".part.dcm")
        stem = self._tmp.name.removesuffix(".part.dcm")
        self._mm_path = self._tmp.with_name(f"{stem}.labels.u8")
        self._probs_mm_path = self._tmp.with_name(f"{stem}.probs.u8")
        self.probs = probs_path_for(self.path) if save_probs else None
        self._probs_tmp = self._tmp.with_name(f"{stem}.probs.part.dcm")
        self._closed = False
        self._probs: np.memmap | None = None
        self._labels: np.memmap | None = None
        self._labels = _reserve(self._mm_path, self.shape, self.path, "label")
        if save_probs:
            try:
                self._probs = _reserve(
                    self._probs_mm_path, (len(self.class_names), *self.shape), self.path, "probability"
                )
            except SinkError:
                self._cleanup()
                raise

    @classmethod
    def for_source(cls, path: Path, source: Source, request: SinkRequest) -> DicomSegSink:
        """A SEG referencing ``source``'s DICOM instances, of the type ``request.options`` asks.

        Raises:
            ConfigError: if the source is not DICOM (a SEG must reference DICOM
                images), or the segment codes file is unusable.
        """
        ref = source.reference
        if not isinstance(ref, (VolumeGeometry, SlideGeometry)):
            raise ConfigError(
                f"{path}: a DICOM SEG must reference DICOM images, and {source.path} is not DICOM; write .zarr instead"
            )
        options = request.options if isinstance(request.options, DicomSegOptions) else DicomSegOptions()
        codes_map = load_segment_codes(options.seg_codes) if options.seg_codes else None
        return cls(
            path, ref, request.class_names, segment_codes=codes_map, segmentation_type=options.seg_type,
            save_probs=request.save_probs, provenance=request.provenance, content_creator=options.seg_creator,
            class_colors=request.class_colors,
        )  # fmt: skip

    def write(self, window: Window, labels: np.ndarray, probs: np.ndarray | None = None) -> None:
        """Store one block: labels (*window.shape) class indices, uint8; probs (K, *window.shape) in [0, 1] or None.

        Raises:
            SinkFinalizedError: after :meth:`finalize` or :meth:`abort`.
            SinkError: if the window leaves the image or labels have the wrong shape.
        """
        self._check_block(window, labels)
        assert self._labels is not None  # released only when closed, which _check_block refuses
        self._labels[window.to_slices()] = self._lut[np.asarray(labels, np.uint8)]
        if self._probs is not None and probs is not None:
            scaled = np.rint(np.clip(probs, 0.0, 1.0) * FRACTIONAL_SCALE).astype(np.uint8)
            index = (slice(None), *window.to_slices())
            self._probs[index] = scaled

    def _color(self, k: int) -> tuple[int, int, int]:
        """Class ``k``'s display colour: the run's (``--class-colors``), else the palette's."""
        return tuple(self.class_colors[k]) if self.class_colors is not None else class_color(k)  # type: ignore[return-value]

    def _algorithm(self) -> hd.AlgorithmIdentificationSequence:
        parameters = None
        p = self.provenance
        if p is not None:
            parameters = {"model": p.model, "software": p.software}
            if p.weights_sha256:
                parameters.update(weights=str(p.weights), weights_sha256=p.weights_sha256)
        return hd.AlgorithmIdentificationSequence(
            name=self.algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=self.algorithm_version,
            parameters=parameters,
        )  # fmt: skip

    def _descriptions(self, every_class: bool = False) -> list[hd.seg.SegmentDescription]:
        """One description per segment: every class but the background, or every class (``every_class``)."""
        algorithm = self._algorithm()
        out = []
        number = 0
        for k, name in enumerate(self.class_names):
            if k == self.background_class and not every_class:
                continue
            number = number + 1 if every_class else int(self._lut[k])
            category, kind = self._codes[k]
            out.append(
                hd.seg.SegmentDescription(
                    segment_number=number,
                    segment_label=name[:64],
                    segmented_property_category=category,
                    segmented_property_type=kind,
                    algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                    algorithm_identification=algorithm,
                    display_color=hd.color.CIELabColor.from_rgb(*self._color(k)),
                )
            )
        return out

    def _sources_and_pixels(self, array: np.ndarray) -> tuple[list[pydicom.Dataset], np.ndarray, bool]:
        """Source headers, ``array`` (scene axes first) in their frame order, and whether to tile it."""
        g = self.geometry
        if isinstance(g, SlideGeometry):
            return [pydicom.dcmread(g.file, stop_before_pixels=True)], array[np.newaxis], True
        if len(set(g.files)) == 1 and len(g.files) > 1:  # one multi-frame file: pixel_array[i] is frame i
            frames = np.empty_like(array)
            frames[list(g.frame_indices)] = array
            return [pydicom.dcmread(g.files[0], stop_before_pixels=True)], frames, False
        return [pydicom.dcmread(f, stop_before_pixels=True) for f in g.files], array, False

    def _build(self, array: np.ndarray, kind: str, fractional: bool = False) -> hd.seg.Segmentation:
        sources, pixels, tiled = self._sources_and_pixels(array)
        # the creator's name may need more than the source's character set: UTF-8 then holds everything
        charset: dict[str, Any] = {} if self.content_creator.isascii() else {"specific_character_set": "ISO_IR 192"}
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=pixels, segmentation_type=kind,
            segment_descriptions=self._descriptions(every_class=fractional), series_instance_uid=hd.UID(),
            series_number=self.series_number + int(fractional), sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer="tilewise", manufacturer_model_name=self.algorithm_name,
            software_versions=self.algorithm_version, device_serial_number="0",
            series_description=self.series_description + (" probabilities" if fractional else ""),
            omit_empty_frames=False, tile_pixel_array=tiled,
            fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
            max_fractional_value=FRACTIONAL_SCALE, content_creator_name=self.content_creator, **charset,
        )  # fmt: skip
        if kind == "LABELMAP":
            # highdicom describes the background as a segment 0; Supplement 243 marks it with
            # PixelPaddingValue (0 here) alone, and readers (dciodvfy, 3D Slicer via dcmqi)
            # expect segment numbers from 1.
            seg.SegmentSequence = [d for d in seg.SegmentSequence if int(d.SegmentNumber) != 0]
            assert int(seg.PixelPaddingValue) == 0
        if isinstance(self.geometry, SlideGeometry) and "PatientOrientation" not in seg:
            # General Image: Type 2C when there is no patient position/orientation, as on a slide
            seg.PatientOrientation = ""
        return seg

    def _probability_array(self) -> np.ndarray:
        """The probabilities (*shape, K) as float32 in [0, 1], what highdicom takes for FRACTIONAL."""
        assert self._probs is not None
        return np.moveaxis(np.asarray(self._probs), 0, -1).astype(np.float32) / FRACTIONAL_SCALE

    def finalize(self) -> tuple[Path, ...]:
        """Encode the SEG(s), save under temporary names and rename into place.

        Returns:
            ``(path,)``, or ``(path, probs)`` with the FRACTIONAL SEG.

        Raises:
            SinkFinalizedError: if called twice or after abort.
            SinkError: if highdicom rejects the data or saving fails (temporary files are removed).
        """
        self._begin_finalize()
        assert self._labels is not None
        try:
            self._build(np.asarray(self._labels), self.segmentation_type).save_as(self._tmp)
            if self._probs is not None and self.probs is not None:
                self._build(self._probability_array(), "FRACTIONAL", fractional=True).save_as(self._probs_tmp)
            os.replace(self._tmp, self.path)
            published: tuple[Path, ...] = (self.path,)
            if self.probs is not None:
                os.replace(self._probs_tmp, self.probs)
                published += (self.probs,)
        except (ValueError, TypeError, OSError, AttributeError) as e:
            raise SinkError(f"{self.path}: cannot write the DICOM SEG ({e})") from e
        finally:
            self._cleanup()
        log.info("wrote %s", ", ".join(map(str, published)))
        return published

    def abort(self) -> None:
        """Remove the buffers and any temporary file; the final names are never touched."""
        self._closed = True
        self._cleanup()

    def _cleanup(self) -> None:
        for name in ("_labels", "_probs"):
            if getattr(self, name, None) is not None:
                setattr(self, name, None)
        for p in (self._mm_path, self._probs_mm_path, self._tmp, self._probs_tmp):
            p.unlink(missing_ok=True)
