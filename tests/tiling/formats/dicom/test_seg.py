"""DICOM SEG sink: round trips through highdicom.seg.segread against the source geometry."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import SHARED
from tiling.core.windows import Window, clip, plan_windows
from tiling.errors import ConfigError, SinkError, SinkFinalizedError
from tiling.formats.dicom.seg import ALGORITHM_NAME, DicomSegSink, segment_numbers
from tiling.formats.dicom.series import DicomMultiframeSource, DicomSeriesSource, DicomSlideSource

DATA = SHARED / "dicom"
CT5N = DATA / "series" / "pydicom_98892001_CT5N"
ECT = DATA / "pydicom-data" / "eCT_Supplemental.dcm"
SLIDE = DATA / "highdicom" / "sm_image.dcm"
CLASSES = ["air", "soft tissue", "bone"]


def _hu_labels(src: DicomSeriesSource | DicomMultiframeSource) -> np.ndarray:
    """Labels by HU threshold, different on every slice, with a nodata corner."""
    data, _ = src.read(Window((0, 0, 0), src.shape))
    labels = np.digitize(data[0], [-500.0, 300.0]).astype(np.uint8)
    for z in range(labels.shape[0]):
        labels[z, : z + 1, :2] = 255
    return labels


def _write_blocks(sink: DicomSegSink, labels: np.ndarray, block: tuple[int, ...]) -> None:
    for w in plan_windows(labels.shape, block, block, edge="pad"):
        w = clip(w, labels.shape)
        sink.write(w, labels[w.to_slices()], None)


@pytest.fixture(scope="module")
def ct5n_seg(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DicomSeriesSource, np.ndarray]:
    src = DicomSeriesSource(CT5N)
    labels = _hu_labels(src)
    out = tmp_path_factory.mktemp("seg") / "ct5n_seg.dcm"
    sink = DicomSegSink(out, src.reference, CLASSES, segmentation_type="LABELMAP")
    _write_blocks(sink, labels, (2, 8, 8))
    assert not out.exists()
    assert sink.finalize()[0] == out
    return out, src, labels


def test_ct5n_seg_references_every_source_instance(ct5n_seg) -> None:
    out, src, _ = ct5n_seg
    seg = hd.seg.segread(out)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.7"  # LABELMAP
    assert seg.segmentation_type.value == "LABELMAP"
    assert seg.StudyInstanceUID == src.reference.study_instance_uid
    assert seg.FrameOfReferenceUID == src.reference.frame_of_reference_uid
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    assert referenced == set(src.reference.sop_instance_uids)
    assert seg.number_of_frames == 5


def test_ct5n_seg_frames_sit_on_their_source_slices(ct5n_seg) -> None:
    out, src, labels = ct5n_seg
    seg = hd.seg.segread(out)
    headers = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: pydicom.dcmread(f, stop_before_pixels=True)
               for f in src.reference.files}  # fmt: skip
    shared = seg.SharedFunctionalGroupsSequence[0]
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        ref = headers[uid]
        assert frame.PlanePositionSequence[0].ImagePositionPatient == pytest.approx(ref.ImagePositionPatient)
        assert shared.PlaneOrientationSequence[0].ImageOrientationPatient == pytest.approx(ref.ImageOrientationPatient)
        assert shared.PixelMeasuresSequence[0].PixelSpacing == pytest.approx(ref.PixelSpacing)
    # pixels, gathered per source instance, are the labels of that slice (class k -> segment k+1, nodata -> 0)
    pixels = seg.get_pixels_by_source_instance(list(src.reference.sop_instance_uids), combine_segments=True)
    np.testing.assert_array_equal(pixels, np.where(labels == 255, 0, labels + 1))


def test_ct5n_seg_describes_the_segments_and_algorithm(ct5n_seg) -> None:
    out, _, _ = ct5n_seg
    seg = hd.seg.segread(out)
    described = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert sorted(described) == [1, 2, 3], "numbered from 1, no segment 0 (Supplement 243: background is padding)"
    assert [described[k].SegmentLabel for k in (1, 2, 3)] == CLASSES
    for item in described.values():
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        assert item.SegmentAlgorithmName == ALGORITHM_NAME == "tilewise DeepLabV3"
        assert item.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == ALGORITHM_NAME
        assert item.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion


def test_ct5n_seg_volume_geometry_matches_the_source(ct5n_seg) -> None:
    out, src, _ = ct5n_seg
    volume = hd.seg.segread(out).get_volume(combine_segments=True)
    assert volume.spacing == pytest.approx(src.reference.spacing)
    # the same voxel lands on the same patient point (highdicom may order slices differently)
    corners = [(0, 0, 0), (4, 15, 15), (2, 3, 7)]
    for idx in corners:
        world = (src.reference.affine @ [*idx, 1])[:3]
        back = np.linalg.solve(volume.affine, [*world, 1])[:3]
        assert np.allclose(back, np.round(back), atol=1e-3)


def test_binary_type_and_background_class(tmp_path: Path) -> None:
    src = DicomSeriesSource(CT5N)
    labels = _hu_labels(src)
    sink = DicomSegSink(tmp_path / "b.dcm", src.reference, CLASSES, segmentation_type="BINARY", background_class=0)
    _write_blocks(sink, labels, (5, 16, 16))
    seg = hd.seg.segread(sink.finalize()[0])
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.segmentation_type.value == "BINARY"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["soft tissue", "bone"]
    pixels = seg.get_pixels_by_source_instance(list(src.reference.sop_instance_uids), combine_segments=True)
    expected = np.select([labels == 1, labels == 2], [1, 2], 0)
    np.testing.assert_array_equal(pixels, expected)


def test_multiframe_seg_maps_frames_by_position(tmp_path: Path) -> None:
    src = DicomMultiframeSource(ECT)
    labels = _hu_labels(src)
    sink = DicomSegSink(tmp_path / "e.dcm", src.reference, CLASSES, segmentation_type="LABELMAP")
    _write_blocks(sink, labels, (1, 256, 256))
    seg = hd.seg.segread(sink.finalize()[0])
    ds = pydicom.dcmread(ECT, stop_before_pixels=True)
    by_frame = {}
    for i, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        number = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber
        source_ipp = ds.PerFrameFunctionalGroupsSequence[number - 1].PlanePositionSequence[0].ImagePositionPatient
        assert frame.PlanePositionSequence[0].ImagePositionPatient == pytest.approx(source_ipp)
        by_frame[number] = i
    # volume z 0 is source frame 2 (see the source's frame_indices)
    assert src.reference.frame_indices == (1, 0)
    frames = seg.get_pixels_by_source_frame(ds.SOPInstanceUID, [2, 1], combine_segments=True)
    np.testing.assert_array_equal(frames, np.where(labels == 255, 0, labels + 1))


def test_slide_seg_covers_the_total_pixel_matrix(tmp_path: Path) -> None:
    src = DicomSlideSource(SLIDE)
    data, _ = src.read(Window((0, 0), src.shape))
    labels = (data.mean(axis=0) < 230).astype(np.uint8)
    labels[40:, 40:] = 255
    sink = DicomSegSink(tmp_path / "s.dcm", src.reference, ["background", "tissue"])
    _write_blocks(sink, labels, (16, 16))
    seg = hd.seg.segread(sink.finalize()[0])
    assert {uid for _, _, uid in seg.get_source_image_uids()} == {src.reference.sop_instance_uid}
    assert (seg.TotalPixelMatrixRows, seg.TotalPixelMatrixColumns) == src.shape
    matrix = seg.get_total_pixel_matrix(combine_segments=True)
    np.testing.assert_array_equal(matrix, np.where(labels == 255, 0, labels + 1))


def test_output_appears_only_at_finalize_and_abort_cleans_up(tmp_path: Path) -> None:
    src = DicomSeriesSource(CT5N)
    sink = DicomSegSink(tmp_path / "x.dcm", src.reference, CLASSES)
    sink.write(Window((0, 0, 0), (1, 16, 16)), np.zeros((1, 16, 16), np.uint8))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert not (tmp_path / "x.dcm").exists() and len(left) == 2, left  # the label buffer and its lock
    sink.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SinkFinalizedError):
        sink.write(Window((0, 0, 0), (1, 16, 16)), np.zeros((1, 16, 16), np.uint8))
    sink = DicomSegSink(tmp_path / "x.dcm", src.reference, CLASSES)
    sink.finalize()
    assert [p.name for p in tmp_path.iterdir()] == ["x.dcm"]
    with pytest.raises(SinkFinalizedError):
        sink.finalize()


def test_bad_writes_and_paths(tmp_path: Path) -> None:
    src = DicomSeriesSource(CT5N)
    sink = DicomSegSink(tmp_path / "x.dcm", src.reference, CLASSES)
    with pytest.raises(SinkError, match="not inside the image"):
        sink.write(Window((4, 0, 0), (2, 16, 16)), np.zeros((2, 16, 16), np.uint8))
    with pytest.raises(SinkError, match="labels have shape"):
        sink.write(Window((0, 0, 0), (1, 16, 16)), np.zeros((16, 16), np.uint8))
    sink.abort()
    with pytest.raises(SinkError, match="does not exist"):
        DicomSegSink(tmp_path / "nope" / "x.dcm", src.reference, CLASSES)
    with pytest.raises(ConfigError, match="LABELMAP or BINARY"):
        DicomSegSink(tmp_path / "x.dcm", src.reference, CLASSES, segmentation_type="FRACTIONAL")
    assert list(tmp_path.iterdir()) == [], "a refused sink leaves no buffer behind"


@given(classes=st.integers(1, 254), background=st.none() | st.integers(0, 253))
def test_segment_numbers_are_consecutive(classes: int, background: int | None) -> None:
    if background is not None and background >= classes:
        with pytest.raises(ConfigError):
            segment_numbers(classes, background)
        return
    lut = segment_numbers(classes, background)
    used = [int(lut[k]) for k in range(classes) if k != background]
    assert used == list(range(1, len(used) + 1))
    assert lut[255] == 0 and (background is None or lut[background] == 0)


def test_too_many_classes() -> None:
    with pytest.raises(ConfigError, match="1 to 254"):
        segment_numbers(255)


def test_a_killed_runs_buffers_are_found_stale_and_removed(tmp_path: Path) -> None:
    """The SEG's buffers are named like every temporary (tiling.core.staging): once nobody holds
    their lock (the process died), the next run removes them."""
    from pipeline.infer.plan import remove_stale_temp_files
    from tiling.core import staging

    src = DicomSeriesSource(CT5N)
    out = tmp_path / "x.dcm"
    sink = DicomSegSink(out, src.reference, CLASSES, save_probs=True)
    assert remove_stale_temp_files([out]) == 0, "a live sink's buffers are never removed"
    staging.release(sink._tmp)  # what the process's death does to its lock
    assert remove_stale_temp_files([out]) >= 2  # the label and probability buffers
    assert list(tmp_path.iterdir()) == []
