"""DICOM and Zarr through the whole pipeline: DICOM SEG and OME-Zarr masks.

A per-pixel model (1x1 convolution) makes the expected mask computable from
the whole volume, so the tests check values and geometry, not just files.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
import zarr
from ome_zarr_models.v04 import Image
from pydicom.uid import generate_uid

from models import Normalization, Predictor
from pipeline.config import InferenceConfig, InputConfig, ModelConfig, PipelineConfig, ProductsConfig, TilingConfig
from pipeline.infer import infer_scene
from tests.conftest import SHARED
from tests.support.cli import run as support_run
from tiling import Window
from tiling.core import TileLayout
from tiling.formats.dicom.series import DicomSeriesSource
from tiling.formats.zarr.reader import ZarrSource

CT5N = SHARED / "dicom" / "series" / "pydicom_98892001_CT5N"
CT2 = SHARED / "dicom" / "series" / "pydicom_77654033_CT2"
LANDSAT = SHARED / "zarr" / "rgb_byte_landsat.ome.zarr"
ECT = SHARED / "zarr" / "ect_supplemental_v05.ome.zarr"


def pixel_model(bands: int, classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(5)
    return torch.nn.Conv2d(bands, classes, kernel_size=1)


def cfg(tile: int, blend: str = "center", **kw) -> PipelineConfig:
    return PipelineConfig(
        TilingConfig(tile=tile, overlap=0.25, blend=blend, **{k: v for k, v in kw.items() if k in ("axis", "context")}),
        ModelConfig(classes=3, precision="fp32", channels_last=False),
        InferenceConfig(batch=4),
        input=InputConfig(window=kw.get("window")),
    )


def expected_labels(volume: np.ndarray, model: torch.nn.Module, norm: Normalization) -> np.ndarray:
    """Whole-slice predictions, slice by slice along axis 0: volume (Z, Y, X)."""
    predictor = Predictor(model, norm, precision="fp32", channels_last=False)
    return np.stack([predictor(s[None, None])[0].argmax(0) for s in volume.astype(np.float32)])


def test_ct_series_to_dicom_seg_references_the_source_slices(ray_session, tmp_path) -> None:
    out = tmp_path / "seg.dcm"
    model = pixel_model(1)
    norm = Normalization((0.5,), (0.25,))
    infer_scene(CT5N, out, cfg(16, window="soft-tissue"), model=model, normalization=norm, progress=False)
    with DicomSeriesSource(CT5N) as src:
        volume, _ = src.read(Window((0, 0, 0), src.shape))
        geometry = src.reference
    windowed = np.clip((volume[0] + 160) / 400, 0, 1)
    expected = expected_labels(windowed, model, norm)

    seg = hd.seg.segread(out)
    sources = {pydicom.dcmread(f).SOPInstanceUID: pydicom.dcmread(f) for f in CT5N.iterdir()}
    referenced = {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == set(sources) == set(geometry.sop_instance_uids)
    assert seg.segmentation_type.value == "BINARY", "the default: every SEG reader has it"
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        ipp = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(ipp, [float(v) for v in sources[uid].ImagePositionPatient], atol=1e-3)
    # segment k+1 is class k; gathered per source slice, in the volume's order
    pixels = seg.get_pixels_by_source_instance(list(geometry.sop_instance_uids), combine_segments=True)
    np.testing.assert_array_equal(pixels, expected + 1)
    # a BINARY SEG has one frame per segment and source slice
    assert len(seg.PerFrameFunctionalGroupsSequence) == len(sources) * seg.number_of_segments
    shared = seg.SharedFunctionalGroupsSequence[0]
    ref = next(iter(sources.values()))
    np.testing.assert_allclose(
        [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing], [float(v) for v in ref.PixelSpacing]
    )
    np.testing.assert_allclose(
        [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
        [float(v) for v in ref.ImageOrientationPatient],
    )


def test_ome_zarr_in_gives_ome_zarr_out_with_the_same_grid(ray_session, tmp_path) -> None:
    out = tmp_path / "mask.zarr"
    model = pixel_model(3)
    norm = Normalization((100.0,) * 3, (50.0,) * 3)
    infer_scene(LANDSAT, out, cfg(256), model=model, normalization=norm, progress=False)
    with ZarrSource(LANDSAT) as src:
        image, valid = src.read(Window((0, 0), src.shape))
        scale, shape, chunks = src.reference.scale, src.shape, src.block_shape
    group = zarr.open_group(out, mode="r")
    level0 = group["0"]
    assert level0.shape == shape and level0.chunks == tuple(chunks)
    ms = group.attrs["multiscales"][0]
    assert [a["name"] for a in ms["axes"]][-2:] == ["y", "x"]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"][-2:] == pytest.approx(list(scale))
    predictor = Predictor(model, norm, precision="fp32", channels_last=False)
    expected = predictor(image[None].astype(np.float32), valid[None])[0].argmax(0)
    labels = level0[...]
    np.testing.assert_array_equal(labels[valid], expected[valid])


def test_mask_into_its_own_ome_zarr_labels_group_lines_up_at_a_coarser_level(ray_session, tmp_path) -> None:
    image = tmp_path / "image.ome.zarr"
    shutil.copytree(LANDSAT, image)
    for p in [image, *image.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)  # the sample is read-only
    files = {p: p.read_bytes() for p in image.rglob("*") if p.is_file()}
    model, norm = pixel_model(3), Normalization((100.0,) * 3, (50.0,) * 3)
    out = image / "labels" / "tilewise"  # where napari looks; no --format: the store's suffix says Zarr
    result = support_run("infer", image, "--out", out, "--level", 1, "--tile", 128, "--classes", 3, "--blend", "center", "--precision", "fp32", "--no-progress",
                         obj={"model": model, "normalization": norm})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {p: p.read_bytes() for p in image.rglob("*") if p.is_file() and "labels" not in p.parts} == files

    root = zarr.open_group(image, mode="r")
    assert Image.from_zarr(root).labels.attributes.labels == ["tilewise"]
    label = zarr.open_group(out, mode="r")
    assert (label["0"].shape, label["1"].shape) == ((718, 791), (359, 395)), "the image's levels, channel dropped"
    with ZarrSource(image, level=1) as src:
        data, valid = src.read(Window((0, 0), src.shape))
    predictor = Predictor(model, norm, precision="fp32", channels_last=False)
    expected = predictor(data[None].astype(np.float32), valid[None])[0].argmax(0)
    coarse = label["1"][...]
    np.testing.assert_array_equal(coarse[valid], expected[valid])
    # level 0 lies on the image's level 0 (scale halved, same origin): pixel j takes the level-1 pixel
    # nearest in physical space, round(j / 2) with ties up, the last one past level 1's extent
    rows, cols = np.minimum((np.arange(718) + 1) // 2, 358), np.minimum((np.arange(791) + 1) // 2, 394)
    np.testing.assert_array_equal(label["0"][...], coarse[np.ix_(rows, cols)])

    other = tmp_path / "ect.ome.zarr"
    shutil.copytree(ECT, other)
    for p in [other, *other.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)
    refused = other / "labels" / "tilewise"
    assert_clean_failure(run_cli("infer", image, "--out", refused), refused, "a label image of", "is a mask of that")
    assert not (other / "labels").exists()


def test_3d_ome_zarr_volume_keeps_chunks_and_spacing(ray_session, tmp_path) -> None:
    out = tmp_path / "ect_mask.zarr"
    infer_scene(ECT, out, cfg(256, blend="gaussian"), model=pixel_model(1), progress=False)
    with ZarrSource(ECT) as src:
        shape, chunks, scale = src.shape, src.block_shape, src.reference.scale
    level0 = zarr.open_group(out, mode="r")["0"]
    assert level0.shape == shape == (2, 512, 512) and level0.chunks == tuple(chunks)
    ms = zarr.open_group(out, mode="r").attrs["multiscales"][0]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == pytest.approx(list(scale))
    assert set(np.unique(level0[...])) <= {0, 1, 2}


def test_two_and_a_half_d_feeds_the_neighbouring_slices_as_channels() -> None:
    with ZarrSource(ECT) as src:
        whole, _ = src.read(Window((0, 0, 0), src.shape))
        image, valid = TileLayout(slice_axis=0, context=3).read(src, Window((0, 100, 100), (1, 32, 32)))
    assert image.shape == (3, 32, 32) and valid.shape == (32, 32) and valid.all()
    assert not image[0].any()  # slice -1 is padding
    np.testing.assert_array_equal(image[1], whole[0, 0, 100:132, 100:132])
    np.testing.assert_array_equal(image[2], whole[0, 1, 100:132, 100:132])


def test_other_slice_axis_reads_coronal_slices() -> None:
    with ZarrSource(ECT) as src:
        whole, _ = src.read(Window((0, 0, 0), src.shape))
        image, _ = TileLayout(slice_axis=1).read(src, Window((0, 7, 0), (2, 1, 64)))
    np.testing.assert_array_equal(image[0], whole[0, :, 7, :64])


# -- bad input through the CLI: one line naming the file, nothing at the output ----------


def run_cli(*args) -> object:
    return support_run(*args)


def assert_clean_failure(result, out: Path, *needles: str) -> None:
    assert result.exit_code != 0 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for n in needles:
        assert n in errors[0], errors[0]
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))


@pytest.fixture
def ct5n_copy(tmp_path) -> Path:
    folder = tmp_path / "ct5n"
    shutil.copytree(CT5N, folder)
    return folder


def test_series_with_a_gap(tmp_path) -> None:
    out = tmp_path / "seg.dcm"
    assert_clean_failure(run_cli("infer", CT2, "--out", out), out, "pydicom_77654033_CT2", "202.5")


def test_series_with_mixed_slice_sizes(tmp_path, ct5n_copy) -> None:
    ds = pydicom.dcmread(ct5n_copy / "2392")
    ds.PixelData = ds.pixel_array[:8, :8].tobytes()
    ds.Rows, ds.Columns = 8, 8
    ds.save_as(ct5n_copy / "2392")
    out = tmp_path / "seg.dcm"
    assert_clean_failure(run_cli("infer", ct5n_copy, "--out", out), out, "2392", "8x8")


def test_series_with_duplicate_positions(tmp_path, ct5n_copy) -> None:
    ds = pydicom.dcmread(ct5n_copy / "3023")
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(ct5n_copy / "3023_copy")
    out = tmp_path / "seg.dcm"
    assert_clean_failure(run_cli("infer", ct5n_copy, "--out", out), out, "3023_copy", "same position")


def test_file_without_pixel_data(tmp_path, ct5n_copy) -> None:
    ds = pydicom.dcmread(ct5n_copy / "3353")
    del ds.PixelData
    ds.save_as(ct5n_copy / "3353")
    out = tmp_path / "seg.dcm"
    assert_clean_failure(run_cli("infer", ct5n_copy, "--out", out), out, "3353", "no pixel data")


def test_missing_decoder_names_the_package(tmp_path) -> None:
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLSLossless

    decoder = get_decoder(JPEGLSLossless)
    plugins = dict(decoder._available)  # restore exactly what was registered
    for label in list(decoder.available_plugins):
        decoder.remove_plugin(label)
    try:
        out = tmp_path / "m.zarr"
        src = SHARED / "dicom" / "pydicom" / "MR_small_jpeg_ls_lossless.dcm"
        assert_clean_failure(run_cli("infer", src, "--out", out), out, "MR_small_jpeg_ls_lossless.dcm", "pip install")
    finally:
        decoder._available.update(plugins)


def test_ome_zarr_level_that_does_not_exist(tmp_path) -> None:
    out = tmp_path / "m.zarr"
    assert_clean_failure(
        run_cli("infer", LANDSAT, "--out", out, "--level", 5), out, "rgb_byte_landsat.ome.zarr", "level"
    )


def test_dicom_seg_needs_a_dicom_source(tmp_path, rgb_byte) -> None:
    out = tmp_path / "m.dcm"
    assert_clean_failure(run_cli("infer", rgb_byte, "--out", out), out, "DICOM SEG", "RGB.byte.tif")


def test_option_for_another_format_is_refused(tmp_path) -> None:
    out = tmp_path / "m.zarr"
    assert_clean_failure(run_cli("infer", LANDSAT, "--out", out, "--series", "1.2.3"), out, "--series")


def test_a_seg_creator_that_is_no_person_name_or_for_another_format_is_refused(tmp_path) -> None:
    out = tmp_path / "seg.dcm"
    assert_clean_failure(
        run_cli("infer", CT5N, "--out", out, "--seg-creator", "Doe\\Jane"), out, "seg_creator", "person"
    )
    out = tmp_path / "m.zarr"
    assert_clean_failure(
        run_cli("infer", LANDSAT, "--out", out, "--seg-creator", "Doe^Jane"), out, "--seg-creator", "dicom-seg"
    )


def test_whole_slide_image_to_dicom_seg_and_ome_zarr(ray_session, tmp_path) -> None:
    slide = SHARED / "dicom" / "highdicom" / "sm_image.dcm"
    model = pixel_model(3)
    norm = Normalization((220.0,) * 3, (20.0,) * 3)
    from tiling.formats.dicom.series import DicomSlideSource

    with DicomSlideSource(slide) as src:
        image, valid = src.read(Window((0, 0), src.shape))
    expected = Predictor(model, norm, precision="fp32", channels_last=False)(
        image[None].astype(np.float32), valid[None]
    )[0].argmax(0)
    seg_path, zarr_path = tmp_path / "slide_seg.dcm", tmp_path / "slide.zarr"
    for out in (seg_path, zarr_path):
        infer_scene(slide, out, cfg(32), model=model, normalization=norm, progress=False)
    seg = hd.seg.segread(seg_path)
    assert (
        seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
        == pydicom.dcmread(slide).SOPInstanceUID
    )
    np.testing.assert_array_equal(seg.get_total_pixel_matrix(combine_segments=True), expected + 1)
    np.testing.assert_array_equal(zarr.open_group(zarr_path, mode="r")["0"][...], expected)


def test_enhanced_multiframe_ct_to_dicom_seg(ray_session, tmp_path) -> None:
    ect = SHARED / "dicom" / "pydicom-data" / "eCT_Supplemental.dcm"
    out = tmp_path / "ect_seg.dcm"
    infer_scene(ect, out, cfg(256, window="-160,240"), model=pixel_model(1), progress=False)
    seg = hd.seg.segread(out)
    src = pydicom.dcmread(ect, stop_before_pixels=True)
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert seg.pixel_array.shape[-2:] == (512, 512) and seg.number_of_frames == 2 * seg.number_of_segments
    source_z = sorted(
        float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in src.PerFrameFunctionalGroupsSequence
    )
    seg_z = sorted(
        float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in seg.PerFrameFunctionalGroupsSequence
    )
    assert sorted(set(seg_z)) == pytest.approx(source_z)  # one frame per segment on each source frame


def test_batch_names_each_mask_after_its_source_and_format(tmp_path, rgb_byte) -> None:
    from pipeline.infer import mask_path_for

    assert mask_path_for(rgb_byte, tmp_path) == tmp_path / "RGB.byte_mask.tif"
    assert mask_path_for(CT5N, tmp_path) == tmp_path / "pydicom_98892001_CT5N_mask.dcm"
    assert mask_path_for(LANDSAT, tmp_path) == tmp_path / "rgb_byte_landsat_mask.zarr"
    assert mask_path_for(CT5N, tmp_path, "ome-zarr") == tmp_path / "pydicom_98892001_CT5N_mask.zarr"


def test_slice_that_fails_to_decode_inside_a_ray_task(ray_session, tmp_path, ct5n_copy) -> None:
    """The error travels back from the Ray read task as one line; the half-done SEG is removed."""
    ds = pydicom.dcmread(ct5n_copy / "2062")
    ds.PixelData = ds.PixelData[:100]  # headers intact: opens fine, fails when decoded
    ds.save_as(ct5n_copy / "2062")
    out = tmp_path / "seg.dcm"
    result = run_cli(
        "infer", ct5n_copy, "--out", out, "--window", "soft-tissue", "--tile", 16, "--backbone", "resnet50"
    )
    assert_clean_failure(result, out, "2062")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct5n"]


def test_class_colours_reach_the_ome_zarr_and_the_seg(ray_session, tmp_path) -> None:
    """--class-colors is set once for every product: the Zarr label colours and the SEG's display colours too."""
    colours = ("#112233", "#445566", "#778899")
    rgb = [tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in colours]
    colored = replace(cfg(256), products=ProductsConfig(class_colors=colours))
    zarr_out = tmp_path / "mask.zarr"
    infer_scene(LANDSAT, zarr_out, colored, model=pixel_model(3), normalization=Normalization((100.0,) * 3, (50.0,) * 3),
                progress=False)  # fmt: skip
    image_label = zarr.open_group(zarr_out, mode="r").attrs["image-label"]
    assert [tuple(c["rgba"][:3]) for c in image_label["colors"][:3]] == rgb
    seg_out = tmp_path / "seg.dcm"
    seg_cfg = replace(cfg(16, window="soft-tissue"), products=ProductsConfig(class_colors=colours))
    infer_scene(
        CT5N, seg_out, seg_cfg, model=pixel_model(1), normalization=Normalization((0.5,), (0.25,)), progress=False
    )
    seg = hd.seg.segread(seg_out)
    shown = {d.SegmentLabel: list(d.RecommendedDisplayCIELabValue) for d in seg.SegmentSequence}
    expected = {f"class_{k}": list(hd.color.CIELabColor.from_rgb(*c).value) for k, c in enumerate(rgb)}
    assert shown and all(shown[name] == expected[name] for name in shown), (shown, expected)
