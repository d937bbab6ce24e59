"""Hostile and malformed input through the CLI (issue 7): size claims, broken DICOM
geometry and headers, bad checkpoints, numbers a float32 cannot hold, complex pixels.

Each case must end in one ``Error:`` line naming the file and the fix, exit
status 1, no traceback, the input unchanged and nothing in the output folder.
Every refusal happens before Ray starts: the ``no_ray`` fixture fails the
test if a run gets as far as starting it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models import build_model
from tests.conftest import digest, write_scene
from tests.support import hostile
from tests.support.cli import run as support_run


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """Fail the test if the run reaches Ray: every refusal here must come before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the run started Ray; the input should have been refused before")

    monkeypatch.setattr("pipeline.infer.engine.ensure_ray", refuse)
    monkeypatch.setattr("pipeline.ray_env.start_ray", lambda *a, **k: None)  # the CLI's early background start


def assert_refused(
    src: Path, out: Path, *args: object, needles: tuple[str, ...] = (), named: Path | None = None
) -> str:
    """Run ``tilewise infer SRC --out OUT ARGS`` and check that it is refused cleanly.

    The one Error line must name ``named`` (SRC by default) and hold every
    needle; SRC and ``named`` must be unchanged and OUT's folder as it was.
    Returns the Error line.
    """
    named = named or src
    out.parent.mkdir(exist_ok=True)
    before = {p: digest(p) for p in {src, named}}
    listing = sorted(out.parent.iterdir())
    argv = ["infer", str(src), "--out", str(out), "--backbone", "resnet50", "--no-progress"]
    result = support_run(*argv, *args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for needle in (named.name, *needles):
        assert needle in errors[0], errors[0]
    assert {p: digest(p) for p in {src, named}} == before, "an input changed"
    assert sorted(out.parent.iterdir()) == listing, "something was left in the output folder"
    return errors[0]


# --- size claims -------------------------------------------------------------------------------


def test_a_vrt_named_tif_is_not_opened_unless_allowed(tmp_path: Path) -> None:
    src = hostile.claiming_vrt(tmp_path / "scene.tif")
    assert src.stat().st_size < 320
    assert_refused(src, tmp_path / "out" / "m.tif", needles=("is a GDAL VRT", "--allow-drivers VRT"))


def test_an_allowed_vrt_claiming_a_terapixel_is_refused_at_open(tmp_path: Path) -> None:
    src = hostile.claiming_vrt(tmp_path / "scene.tif")
    line = assert_refused(src, tmp_path / "out" / "m.tif", "--allow-drivers", "VRT", "--allow-no-crs")
    assert "1,000,000 x 1,000,000 pixels" in line and "limit of 1e+10" in line
    assert "--max-pixels 1000000000000" in line


def test_a_tiny_zarr_store_claiming_one_huge_chunk_is_refused_at_open(tmp_path: Path) -> None:
    src = hostile.claiming_zarr(tmp_path / "claim.zarr")
    assert sum(f.stat().st_size for f in src.iterdir()) < 300
    line = assert_refused(src, tmp_path / "out" / "m.zarr")
    assert "100,000 x 100,000 pixels of uint8 (9,537 MiB per band)" in line
    assert "limit of 256 MiB" in line and "--max-chunk-mb 9537" in line


def test_too_many_bands_are_refused_at_open(tmp_path: Path) -> None:
    src = write_scene(tmp_path / "cube.tif", np.ones((600, 4, 4), np.uint8), block=None)
    assert_refused(src, tmp_path / "out" / "m.tif", needles=("600 bands", "limit of 512", "--max-bands 600"))


def test_the_limit_flags_reach_the_check(tmp_path: Path) -> None:
    src = write_scene(tmp_path / "small.tif", np.ones((3, 64, 64), np.uint8))
    out = tmp_path / "out" / "m.tif"
    assert_refused(src, out, "--max-pixels", "4e3", needles=("64 x 64 pixels", "--max-pixels 4096"))
    assert_refused(src, out, "--max-bands", "2", needles=("3 bands", "--max-bands 3"))
    big_blocks = write_scene(
        tmp_path / "blocks.tif", np.ones((1, 1024, 1024), np.uint16), block=1024, compress="deflate"
    )
    assert_refused(
        big_blocks, out, "--max-chunk-mb", "1", needles=("1,024 x 1,024 pixels of uint16 (2 MiB", "--max-chunk-mb 2")
    )


# --- DICOM geometry and headers -----------------------------------------------------------------

SERIES_CASES = [
    ("ImagePositionPatient", b"nan\\0\\0", "not finite"),
    ("ImagePositionPatient", b"0\\0\\inf", "not finite"),
    ("ImageOrientationPatient", b"1\\0\\0\\1\\0\\0", "parallel"),
    ("ImageOrientationPatient", b"0\\0\\0\\0\\1\\0", "zero direction"),
    ("ImageOrientationPatient", b"1\\0\\0\\0\\nan\\0", "not finite"),
    ("PixelSpacing", b"0\\0.5", "not positive"),
    ("PixelSpacing", b"-0.4\\0.4", "not positive"),
    ("PixelSpacing", b"0.5a", "not a number"),
    ("PixelSpacing", b"0.5", "1 value(s) where DICOM has 2"),
    ("RescaleSlope", b"x", "'x', not a number"),
    ("RescaleIntercept", b"-inf", "not finite"),
]


@pytest.mark.parametrize(("keyword", "raw", "problem"), SERIES_CASES, ids=[f"{k}={r!r}" for k, r, _ in SERIES_CASES])
def test_a_series_slice_with_bad_geometry_or_header_is_refused(tmp_path: Path, keyword, raw, problem) -> None:
    src = hostile.broken_series(tmp_path / "CT", keyword, raw)
    assert_refused(src, tmp_path / "out" / "m.zarr", needles=("2392", keyword, problem))


MULTIFRAME_CASES = [
    ("ImagePositionPatient", b"nan\\0\\0", "frame 2 ImagePositionPatient", "not finite"),
    ("ImageOrientationPatient", b"1\\0\\0\\1\\0\\0", "frame 2 ImageOrientationPatient", "parallel"),
    ("PixelSpacing", b"0\\0.5", "frame 2 PixelSpacing", "not positive"),
    ("RescaleSlope", b"x", "frame 2 PixelValueTransformationSequence RescaleSlope", "not a number"),
]


@pytest.mark.parametrize(("keyword", "raw", "where", "problem"), MULTIFRAME_CASES, ids=[c[0] for c in MULTIFRAME_CASES])
def test_a_multiframe_file_with_bad_per_frame_geometry_is_refused(tmp_path: Path, keyword, raw, where, problem) -> None:
    src = hostile.broken_multiframe(tmp_path / "ect.dcm", keyword, raw)
    assert_refused(src, tmp_path / "out" / "m.zarr", needles=(where, problem))


SLIDE_CASES = [
    ("PixelSpacing", b"nan\\0.0005", "not finite"),
    ("PixelSpacing", b"0\\0.0005", "not positive"),
    ("ImageOrientationSlide", b"0\\-1\\0\\0\\-1\\0", "parallel"),
]


@pytest.mark.parametrize(("keyword", "raw", "problem"), SLIDE_CASES, ids=[f"{k}={r!r}" for k, r, _ in SLIDE_CASES])
def test_a_slide_with_bad_geometry_is_refused(tmp_path: Path, keyword, raw, problem) -> None:
    src = hostile.broken_slide(tmp_path / "slide.dcm", keyword, raw)
    assert_refused(src, tmp_path / "out" / "m.zarr", needles=(keyword, problem))


# --- checkpoints --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet50_state() -> dict[str, torch.Tensor]:
    return build_model("resnet50", classes=2).state_dict()


def test_a_checkpoint_with_a_wrong_tensor_shape_names_the_tensor(tmp_path: Path, resnet50_state) -> None:
    sd = dict(resnet50_state)
    sd["backbone.layer2.0.conv1.weight"] = torch.zeros(128, 256, 3, 3)
    torch.save(sd, tmp_path / "bad.pth")
    src = write_scene(tmp_path / "s.tif", np.ones((3, 32, 32), np.uint8))
    weights = tmp_path / "bad.pth"
    line = assert_refused(src, tmp_path / "out" / "m.tif", "--weights", weights, named=weights)
    assert "bad.pth: tensor backbone.layer2.0.conv1.weight has shape (128, 256, 3, 3)" in line
    assert "deeplabv3_resnet50 expects (128, 256, 1, 1)" in line


def test_a_checkpoint_with_non_string_keys_is_refused(tmp_path: Path) -> None:
    torch.save({0: torch.zeros(3), 1: torch.ones(2)}, tmp_path / "ints.pth")
    src = write_scene(tmp_path / "s.tif", np.ones((3, 32, 32), np.uint8))
    line = assert_refused(
        src, tmp_path / "out" / "m.tif", "--weights", tmp_path / "ints.pth", named=tmp_path / "ints.pth"
    )
    assert "ints.pth: key 0 is a int, not a parameter name" in line


def test_a_checkpoint_whose_first_conv_is_not_a_kernel_is_refused(tmp_path: Path, resnet50_state) -> None:
    sd = dict(resnet50_state)
    sd["backbone.conv1.weight"] = torch.zeros(64)
    torch.save(sd, tmp_path / "flat.pth")
    src = write_scene(tmp_path / "s.tif", np.ones((3, 32, 32), np.uint8))
    line = assert_refused(
        src, tmp_path / "out" / "m.tif", "--weights", tmp_path / "flat.pth", named=tmp_path / "flat.pth"
    )
    assert "tensor backbone.conv1.weight has shape (64,)" in line


# --- numbers ------------------------------------------------------------------------------------


def test_float64_values_beyond_float32_are_refused_not_made_nodata(tmp_path: Path) -> None:
    data = np.ones((1, 40, 40))
    data[0, 3, 4], data[0, 20, 20] = 1e300, -1e39
    src = write_scene(tmp_path / "wide.tif", data, block=None)
    assert_refused(src, tmp_path / "out" / "m.tif", needles=("values from -1e+39 to 1e+300", "float32", "rescale"))


def test_complex_pixels_are_refused_unless_a_conversion_is_asked_for(tmp_path: Path) -> None:
    src = write_scene(tmp_path / "sar.tif", np.full((1, 16, 16), 1 + 1j, np.complex64), block=None)
    assert_refused(src, tmp_path / "out" / "m.tif", needles=("complex pixels (complex64)", "--complex abs"))


def test_a_geotiff_option_on_a_dicom_source_is_refused(tmp_path: Path) -> None:
    src = hostile.broken_series(tmp_path / "CT", "SliceThickness", b"2.5")  # an intact series
    assert_refused(
        src, tmp_path / "out" / "m.zarr", "--complex", "abs", needles=("--complex", "does not apply to a DICOM")
    )
