"""DICOM sources: series, multi-frame and slide reads, geometry, and every open error."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.pixels import get_decoder
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, generate_uid

from tests.conftest import SHARED
from tiling.core.windows import Window
from tiling.errors import SourceOpenError, SourceReadError, WindowError
from tiling.formats import spec_of
from tiling.formats.dicom.series import (
    DecoderMissingError,
    DicomMultiframeSource,
    DicomSeriesError,
    DicomSeriesSource,
    DicomSlideSource,
    open_dicom,
)

DATA = SHARED / "dicom"
CT5N = DATA / "series" / "pydicom_98892001_CT5N"
CT2 = DATA / "series" / "pydicom_77654033_CT2"
ECT = DATA / "pydicom-data" / "eCT_Supplemental.dcm"
SLIDE = DATA / "highdicom" / "sm_image.dcm"
MR = DATA / "pydicom"


def _oracle_series(folder: Path) -> tuple[np.ndarray, list[pydicom.Dataset]]:
    """The whole series in HU, slices sorted by z (the samples are axial, normal +z)."""
    dss = sorted((pydicom.dcmread(f) for f in folder.iterdir()), key=lambda d: float(d.ImagePositionPatient[2]))
    vol = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss])
    return vol.astype(np.float32), dss


def _padded(vol: np.ndarray, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Reference read: ``vol[window]`` with zeros, and the inside mask, where the window overruns."""
    data = np.zeros(window.shape, vol.dtype)
    valid = np.zeros(window.shape, bool)
    src, dst = [], []
    for a, n, size in zip(window.start, window.shape, vol.shape):
        lo, hi = max(a, 0), min(a + n, size)
        if lo >= hi:
            return data, valid
        src.append(slice(lo, hi))
        dst.append(slice(lo - a, hi - a))
    data[tuple(dst)] = vol[tuple(src)]
    valid[tuple(dst)] = True
    return data, valid


@pytest.fixture()
def ct5n_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "ct5n"
    shutil.copytree(CT5N, folder)
    return folder


# -- series: reading and geometry -------------------------------------------------


def test_series_geometry_matches_the_headers() -> None:
    _vol, dss = _oracle_series(CT5N)
    with DicomSeriesSource(CT5N) as src:
        g = src.reference
        assert src.shape == (5, 16, 16) and src.count == 1 and src.dtype == np.float32
        assert src.block_shape == (1, 16, 16)
        assert g.spacing == pytest.approx((2.5, 0.488281, 0.488281))
        assert g.origin == pytest.approx([float(v) for v in dss[0].ImagePositionPatient])
        assert g.sop_instance_uids == tuple(d.SOPInstanceUID for d in dss)
        assert [Path(f).name for f in g.files] == ["3353", "3023", "2693", "2392", "2062"]
        assert g.frame_of_reference_uid == dss[0].FrameOfReferenceUID
        assert g.series_instance_uid == dss[0].SeriesInstanceUID
        # the affine puts every slice's first voxel at its ImagePositionPatient
        for z, d in enumerate(dss):
            assert (g.affine @ [z, 0, 0, 1])[:3] == pytest.approx([float(v) for v in d.ImagePositionPatient], abs=1e-4)
        # and steps along a row by PixelSpacing[1] in the IOP row direction (+x here)
        assert (g.affine @ [0, 0, 3, 1])[:3] - g.origin == pytest.approx([3 * 0.488281, 0, 0])


def test_series_agrees_with_highdicom_volume() -> None:
    dss = [pydicom.dcmread(f) for f in CT5N.iterdir()]
    ref = hd.get_volume_from_series(dss)
    with DicomSeriesSource(CT5N) as src:
        assert src.reference.spacing == pytest.approx(ref.spacing)
        data, _ = src.read(Window((0, 0, 0), src.shape))
    # highdicom may order slices the other way; the set of HU slices must match
    assert sorted(float(s.sum()) for s in data[0]) == pytest.approx(sorted(float(s.sum()) for s in ref.array))


@settings(max_examples=40, deadline=None)
@given(
    z=st.integers(-3, 6), y=st.integers(-8, 20), x=st.integers(-8, 20),
    dz=st.integers(1, 7), dy=st.integers(1, 24), dx=st.integers(1, 24),
)  # fmt: skip
def test_series_window_reads_match_the_whole_volume(z: int, y: int, x: int, dz: int, dy: int, dx: int) -> None:
    vol, _ = _oracle_series(CT5N)
    window = Window((z, y, x), (dz, dy, dx))
    with DicomSeriesSource(CT5N) as src:
        data, valid = src.read(window)
    ref, ref_valid = _padded(vol, window)
    assert data.shape == (1, dz, dy, dx) and data.dtype == np.float32
    np.testing.assert_array_equal(valid, ref_valid)
    np.testing.assert_array_equal(data[0], ref)


def test_series_applies_rescale_and_decodes_only_touched_slices() -> None:
    raw = pydicom.dcmread(CT5N / "2693")  # the middle slice, z index 2
    with DicomSeriesSource(CT5N) as src:
        data, valid = src.read(Window((2, 0, 0), (1, 16, 16)))
        assert src.frames_decoded == 1
        src.read(Window((1, 4, 4), (2, 4, 4)))
        assert src.frames_decoded == 2  # slice 2 came from the cache, slice 1 was decoded
    with DicomSeriesSource(CT5N, cache_bytes=0) as src:  # the cache keeps one slice at least
        src.read(Window((1, 0, 0), (2, 16, 16)))
        src.read(Window((1, 0, 0), (2, 16, 16)))
        assert src.frames_decoded == 4
    np.testing.assert_array_equal(data[0, 0], raw.pixel_array.astype(np.float32) - 1024)
    assert valid.all()


def test_a_corrupt_slice_fails_only_the_windows_that_touch_it(ct5n_copy: Path) -> None:
    ds = pydicom.dcmread(ct5n_copy / "2062")  # highest z: index 4
    ds.PixelData = ds.PixelData[:100]
    ds.save_as(ct5n_copy / "2062")
    with DicomSeriesSource(ct5n_copy) as src:
        data, _ = src.read(Window((0, 0, 0), (4, 16, 16)))
        assert data.any()
        with pytest.raises(SourceReadError, match="2062"):
            src.read(Window((3, 0, 0), (2, 16, 16)))


def test_series_rejects_windows_of_the_wrong_rank() -> None:
    with DicomSeriesSource(CT5N) as src, pytest.raises(WindowError, match="3-axis"):
        src.read(Window((0, 0), (4, 4)))


def test_series_spec_reopens_the_same_series() -> None:
    with DicomSeriesSource(CT5N) as src:
        spec = pickle.loads(pickle.dumps(spec_of(src)))
        assert spec.format == "dicom" and spec.path == str(CT5N)
        with spec.open() as again:
            assert again.reference == src.reference


# -- series: errors ---------------------------------------------------------------------


def test_irregular_series_names_the_folder_and_the_gap() -> None:
    with pytest.raises(DicomSeriesError) as err:
        DicomSeriesSource(CT2)
    text = str(err.value)
    assert str(CT2) in text and "202.500 mm" in text and "17106" in text and "-99.480" in text


def test_missing_middle_slice_is_a_gap(ct5n_copy: Path) -> None:
    (ct5n_copy / "2693").unlink()  # z = 3.76 of -1.24 ... 8.76
    with pytest.raises(DicomSeriesError, match=r"gap of 5\.000 mm \(expected 2\.500 mm\).*3023.*2392"):
        DicomSeriesSource(ct5n_copy)


def test_rounded_positions_are_not_gaps_but_a_missing_slice_is(ct5n_copy: Path) -> None:
    ds = pydicom.dcmread(ct5n_copy / "2392")
    ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], 6.27]  # was 6.2625
    ds.save_as(ct5n_copy / "2392")
    with DicomSeriesSource(ct5n_copy) as src:
        assert src.shape == (5, 16, 16) and src.reference.spacing[0] == pytest.approx(2.5, abs=0.01)
    (ct5n_copy / "2693").unlink()
    with pytest.raises(DicomSeriesError, match="gap of 5"):
        DicomSeriesSource(ct5n_copy, spacing_tolerance=0.5)


def test_mixed_sizes_name_the_odd_file(ct5n_copy: Path) -> None:
    ds = pydicom.dcmread(ct5n_copy / "2392")
    ds.PixelData = ds.pixel_array[:8, :8].tobytes()
    ds.Rows, ds.Columns = 8, 8
    ds.save_as(ct5n_copy / "2392")
    with pytest.raises(DicomSeriesError, match=r"2392: is 8x8 pixels but .* is 16x16"):
        DicomSeriesSource(ct5n_copy)


def test_duplicate_positions_name_both_files(ct5n_copy: Path) -> None:
    ds = pydicom.dcmread(ct5n_copy / "3023")
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(ct5n_copy / "3023_copy")
    with pytest.raises(DicomSeriesError, match=r"3023.* and 3023_copy lie at the same position"):
        DicomSeriesSource(ct5n_copy)


def test_file_without_pixel_data_is_named(ct5n_copy: Path) -> None:
    ds = pydicom.dcmread(ct5n_copy / "3353")
    del ds.PixelData
    ds.save_as(ct5n_copy / "3353")
    with pytest.raises(DicomSeriesError, match=r"3353: has no pixel data"):
        DicomSeriesSource(ct5n_copy)


def test_non_dicom_files_are_skipped(ct5n_copy: Path) -> None:
    (ct5n_copy / "README.txt").write_text("not dicom")
    with DicomSeriesSource(ct5n_copy) as src:
        assert src.shape == (5, 16, 16)


def test_several_series_need_a_choice(ct5n_copy: Path) -> None:
    for f in CT2.iterdir():
        shutil.copy(f, ct5n_copy / f"ct2_{f.name}")
    uid5 = pydicom.dcmread(CT5N / "2062").SeriesInstanceUID
    uid2 = pydicom.dcmread(CT2 / "17106").SeriesInstanceUID
    with pytest.raises(DicomSeriesError) as err:
        DicomSeriesSource(ct5n_copy)
    assert uid5 in str(err.value) and uid2 in str(err.value) and "series_uid" in str(err.value)
    with DicomSeriesSource(ct5n_copy, series_uid=uid5) as src:
        assert src.shape == (5, 16, 16) and src.series_uid == uid5
    with pytest.raises(DicomSeriesError, match=f"no series 1.2.3.*{uid5}"):
        DicomSeriesSource(ct5n_copy, series_uid="1.2.3")


def test_missing_or_empty_paths(tmp_path: Path) -> None:
    with pytest.raises(SourceOpenError, match="no such"):
        DicomSeriesSource(tmp_path / "nope")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(SourceOpenError, match="no DICOM instances"):
        DicomSeriesSource(tmp_path)
    with pytest.raises(SourceOpenError, match="not a DICOM file"):
        open_dicom(tmp_path / "a.txt")


# -- compressed data and decoders ----------------------------------------------------------

_PLUGIN_MODULES = {
    "gdcm": "pydicom.pixels.decoders.gdcm",
    "pylibjpeg": "pydicom.pixels.decoders.pylibjpeg",
    "pyjpegls": "pydicom.pixels.decoders.pyjpegls",
    "pillow": "pydicom.pixels.decoders.pillow",
}


@pytest.fixture()
def without_decoders():
    """Unregister every installed plugin of some syntaxes through pydicom's own plugin API."""
    removed: list[tuple[object, str]] = []

    def remove(uid: str) -> None:
        decoder = get_decoder(uid)
        for label in decoder.available_plugins:
            decoder.remove_plugin(label)
            removed.append((decoder, label))

    yield remove
    for decoder, label in removed:
        decoder.add_plugin(label, (_PLUGIN_MODULES[label], "_decode_frame"))


@pytest.mark.parametrize(
    ("name", "uid", "package"),
    [("MR_small_jpeg_ls_lossless.dcm", JPEGLSLossless, "pyjpegls"),
     ("MR_small_jp2klossless.dcm", JPEG2000Lossless, "pylibjpeg-openjpeg")],
)  # fmt: skip
def test_missing_decoder_names_the_package(without_decoders, name: str, uid: str, package: str) -> None:
    without_decoders(uid)
    with pytest.raises(DecoderMissingError, match=f"{name}: pixel data is compressed as .*pip install .*{package}"):
        open_dicom(MR / name)


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"])
def test_compressed_slices_decode_like_the_uncompressed_one(name: str) -> None:
    window = Window((0, 0, 0), (1, 64, 64))
    with open_dicom(MR / "MR_small.dcm") as plain, open_dicom(MR / name) as packed:
        assert isinstance(packed, DicomSeriesSource) and packed.shape == (1, 64, 64)
        np.testing.assert_array_equal(packed.read(window)[0], plain.read(window)[0])


# -- multi-frame ----------------------------------------------------------------------------------


def test_multiframe_orders_frames_along_the_normal() -> None:
    ds = pydicom.dcmread(ECT)
    raw = ds.pixel_array.astype(np.float32) - 1024  # RescaleIntercept -1024 in the functional groups
    with open_dicom(ECT) as src:
        assert isinstance(src, DicomMultiframeSource)
        g = src.reference
        assert src.shape == (2, 512, 512) and src.block_shape == (1, 512, 512)
        # IOP (-1,0,0 / 0,1,0): the normal is -z, so frame 2 (z=-149) comes first
        assert g.normal == pytest.approx([0, 0, -1])
        assert g.frame_indices == (1, 0)
        assert g.origin == pytest.approx((99.5, -301.5, -149.0))
        assert g.spacing == pytest.approx((10.0, 0.388672, 0.388672))
        assert (g.affine @ [1, 0, 0, 1])[:3] == pytest.approx((99.5, -301.5, -159.0))
        assert g.sop_instance_uids == (ds.SOPInstanceUID,) * 2
        data, valid = src.read(Window((0, 100, 200), (1, 64, 64)))
        assert src.frames_decoded == 1
        np.testing.assert_array_equal(data[0, 0], raw[1, 100:164, 200:264])
        data, valid = src.read(Window((1, 500, 500), (2, 20, 20)))
        np.testing.assert_array_equal(data[0, 0, :12, :12], raw[0, 500:, 500:])
        assert valid.sum() == 144 and not data[0, 1].any()


def test_multiframe_without_plane_positions_is_rejected() -> None:
    with pytest.raises(DicomSeriesError, match="emri_small.dcm: frame 1 has no plane position"):
        DicomMultiframeSource(DATA / "pydicom-data" / "emri_small.dcm")


def test_multiframe_without_pixel_data_is_named(tmp_path: Path) -> None:
    ds = pydicom.dcmread(ECT)
    del ds.PixelData
    ds.save_as(tmp_path / "empty.dcm")
    with pytest.raises(DicomSeriesError, match="empty.dcm: has no pixel data"):
        open_dicom(tmp_path / "empty.dcm")


# -- slide ------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(r=st.integers(-12, 55), c=st.integers(-12, 55), h=st.integers(1, 40), w=st.integers(1, 40))
def test_slide_windows_match_the_total_pixel_matrix(r: int, c: int, h: int, w: int) -> None:
    full = np.moveaxis(hd.imread(SLIDE).get_total_pixel_matrix(), -1, 0)
    window = Window((r, c), (h, w))
    with DicomSlideSource(SLIDE) as src:
        data, valid = src.read(window)
    ref = np.stack([_padded(band, window)[0] for band in full])
    np.testing.assert_array_equal(valid, _padded(full[0], window)[1])
    np.testing.assert_array_equal(data, ref)


def test_slide_decodes_only_the_tiles_a_window_touches() -> None:
    with open_dicom(SLIDE) as src:
        assert isinstance(src, DicomSlideSource)
        assert src.shape == (50, 50) and src.count == 3 and src.dtype == np.uint8 and src.block_shape == (10, 10)
        data, valid = src.read(Window((5, 15), (10, 10)))  # tile rows 0-1, tile cols 1-2
        assert data.shape == (3, 10, 10) and valid.all()
        assert src.frames_decoded == 4
        assert src.reference.pixel_spacing == pytest.approx((0.000499, 0.000499))
        assert spec_of(src).format == "dicom"
        with pytest.raises(WindowError):
            src.read(Window((0, 0, 0), (1, 4, 4)))


def test_jpegls_slide_reads_like_the_uncompressed_one() -> None:
    window = Window((0, 0), (50, 50))
    with DicomSlideSource(SLIDE) as a, DicomSlideSource(DATA / "highdicom" / "sm_image_jpegls.dcm") as b:
        np.testing.assert_array_equal(a.read(window)[0], b.read(window)[0])


def test_slide_source_rejects_other_images() -> None:
    with pytest.raises(SourceOpenError, match="not a tiled VL Whole Slide"):
        DicomSlideSource(ECT)
