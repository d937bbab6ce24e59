"""Size limits, GDAL driver allow-listing, complex and wide-float pixels, malformed metadata (issue 7).

The CLI's one-line refusals are tested in tests/pipeline/cli/test_hostile_input.py;
here the readers' side: what is accepted, what a conversion returns, and
where the checks sit (at open, in the registry; skipped on a worker's reopen).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import rasterio
import zarr

from tests.conftest import write_scene
from tests.support import hostile
from tiling.core.windows import Window
from tiling.errors import ConfigError, SourceOpenError, SourceReadError, SourceTooLargeError
from tiling.formats import open_source, spec_of
from tiling.formats.base import SourceLimits
from tiling.formats.dicom.geometry import DicomHeaderError


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "10"])
def test_limits_must_be_positive_integers(bad) -> None:
    with pytest.raises(ConfigError, match="max_bands: must be a positive integer"):
        SourceLimits(max_bands=bad)


def test_each_limit_refuses_just_above_and_accepts_at_it(tmp_path: Path) -> None:
    src = write_scene(tmp_path / "s.tif", np.ones((3, 64, 64), np.uint16), block=32)  # 2 KiB blocks
    open_source(src, limits=SourceLimits(max_pixels=64 * 64, max_bands=3)).close()
    with pytest.raises(SourceTooLargeError, match="64 x 64 pixels"):
        open_source(src, limits=SourceLimits(max_pixels=64 * 64 - 1))
    with pytest.raises(SourceTooLargeError, match="claims 3 bands, over the limit of 2"):
        open_source(src, limits=SourceLimits(max_bands=2))
    open_source(src, bands=(1, 2), limits=SourceLimits(max_bands=2)).close()  # the bands read are what counts


def test_a_worker_reopening_a_spec_does_not_check_again(tmp_path: Path) -> None:
    """The driver checked the user's (raised) limits; the spec must not fall back to the defaults."""
    store = zarr.create_array(tmp_path / "a.zarr", shape=(1, 9000, 9000), chunks=(1, 9000, 9000), dtype="float32")
    assert store.chunks == (1, 9000, 9000)  # 309 MiB per chunk, over the default 256
    with pytest.raises(SourceTooLargeError, match="9,000 x 9,000 pixels of float32"):
        open_source(tmp_path / "a.zarr")
    with open_source(tmp_path / "a.zarr", limits=SourceLimits(max_chunk_mb=400)) as src:
        with spec_of(src).open() as again:
            assert again.block_shape == (1, 9000, 9000)


def test_an_allowed_vrt_reads_like_its_source_and_reopens_with_the_same_drivers(tmp_path: Path, rgb_byte) -> None:
    vrt = hostile.vrt_over(tmp_path / "view.vrt", rgb_byte, (718, 791))
    with pytest.raises(SourceOpenError, match="is a GDAL VRT"):
        open_source(vrt)
    with open_source(vrt, allow_drivers=("vrt",)) as src, rasterio.open(rgb_byte) as ref:
        data, _ = src.read(Window((100, 200), (64, 64)))
        np.testing.assert_array_equal(data[0], ref.read(1, window=((100, 164), (200, 264))))
        with spec_of(src).open() as again:
            assert again.options.allow_drivers == ("vrt",)


def test_driver_names_are_checked_and_cog_means_gtiff(tmp_path: Path, rgb_byte) -> None:
    with pytest.raises(ConfigError, match="'JP2OpenJPG' is not a GDAL raster driver; did you mean 'JP2OpenJPEG'"):
        open_source(rgb_byte, allow_drivers=("JP2OpenJPG",))
    open_source(rgb_byte, allow_drivers=("COG",)).close()


def test_other_gdal_formats_need_their_driver_named(tmp_path: Path) -> None:
    png = tmp_path / "photo.png"
    with rasterio.open(png, "w", driver="PNG", width=8, height=8, count=1, dtype="uint8") as dst:
        dst.write(np.full((1, 8, 8), 7, np.uint8))
    with pytest.raises(SourceOpenError, match="photo.png: not a readable raster .*--allow-drivers"):
        open_source(png)
    with pytest.warns(UserWarning, match="no CRS"), open_source(png, allow_drivers=("PNG",)) as src:
        assert src.read(Window((0, 0), (8, 8)))[0].max() == 7


COMPLEX = (np.arange(-8, 8).reshape(1, 4, 4) + 1j * np.arange(16).reshape(1, 4, 4)[:, ::-1]).astype(np.complex64)
PARTS = {"abs": np.abs, "real": np.real, "imag": np.imag, "phase": np.angle}


@pytest.mark.parametrize("part", PARTS)
def test_complex_geotiff_and_zarr_read_the_part_asked_for(tmp_path: Path, part: str) -> None:
    tif = write_scene(tmp_path / "sar.tif", COMPLEX, block=None)
    store = zarr.create_array(tmp_path / "sar.zarr", shape=(4, 4), chunks=(4, 4), dtype="complex64")
    store[:] = COMPLEX[0]
    for path in (tif, tmp_path / "sar.zarr"):
        with pytest.raises(SourceOpenError, match="complex pixels"):
            open_source(path)
        with open_source(path, complex=part) as src:
            assert src.dtype == np.float32 and src.options.complex == part
            data, valid = src.read(Window((0, 0), (4, 4)))
            np.testing.assert_allclose(data[0], PARTS[part](COMPLEX[0]), rtol=1e-6)
            assert valid.all()


def test_an_unknown_complex_part_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'abz' is not one of abs, real, imag, phase; did you mean 'abs'"):
        open_source(write_scene(tmp_path / "sar.tif", COMPLEX, block=None), complex="abz")


def test_float64_within_float32_range_reads_and_beyond_it_is_refused(tmp_path: Path) -> None:
    data = np.linspace(-3e38, 3e38, 64).reshape(1, 8, 8)
    with open_source(write_scene(tmp_path / "ok.tif", data, block=None)) as src:
        got, valid = src.read(Window((0, 0), (8, 8)))
        assert valid.all()
        np.testing.assert_array_equal(got, data.astype(np.float32))
    store = zarr.create_array(tmp_path / "wide.zarr", shape=(8, 8), chunks=(8, 8), dtype="float64")
    store[:] = np.where(np.eye(8, dtype=bool), 1e200, 1.0)
    with open_source(tmp_path / "wide.zarr") as src, pytest.raises(SourceReadError, match="values from 1 to 1e\\+200"):
        src.read(Window((0, 0), (8, 8)))


def _ome(tmp_path: Path, scale: object) -> Path:
    path = tmp_path / "img.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=2)
    group.create_array("0", shape=(8, 8), chunks=(8, 8), dtype="uint8")
    axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    transforms = [{"type": "scale", "scale": scale}]
    group.attrs["multiscales"] = [
        {"version": "0.4", "axes": axes, "datasets": [{"path": "0", "coordinateTransformations": transforms}]}
    ]
    return path


@pytest.mark.parametrize(
    ("scale", "message"),
    [([float("nan"), 1.0], "a scale must be finite and positive"), ([0.0, 1.0], "finite and positive"),
     (["x", 1.0], "malformed Zarr/OME metadata"), ([1.0], "malformed Zarr/OME metadata")],
)  # fmt: skip
def test_ome_zarr_with_an_unusable_scale_is_refused(tmp_path: Path, scale, message: str) -> None:
    with pytest.raises(SourceOpenError, match=message):
        open_source(_ome(tmp_path, scale))


def test_a_dicom_file_claiming_a_billion_frames_is_refused_before_highdicom_indexes_them(tmp_path: Path) -> None:
    ds = pydicom.dcmread(hostile.SLIDE)
    ds.NumberOfFrames = 1_000_000_000
    ds.save_as(tmp_path / "claim.dcm")
    t0 = time.perf_counter()
    with pytest.raises(DicomHeaderError, match="claims 1,000,000,000 frames .* but the file has"):
        open_source(tmp_path / "claim.dcm")
    assert time.perf_counter() - t0 < 5


def test_a_malformed_file_of_another_series_does_not_block_the_one_chosen(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    shutil.copytree(hostile.CT5N, folder / "good")
    other = folder / "other.dcm"
    ds = pydicom.dcmread(hostile.CT5N / "2392")
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    hostile.set_raw(ds, "RescaleSlope", b"x")
    ds.save_as(other)
    good_uid = str(pydicom.dcmread(hostile.CT5N / "2392").SeriesInstanceUID)
    with open_source(folder, series=good_uid) as src:
        assert src.shape == (5, 16, 16)
    with pytest.raises(DicomHeaderError, match="other.dcm: RescaleSlope is 'x', not a number"):
        open_source(folder, series=str(ds.SeriesInstanceUID))


def test_a_zero_slice_thickness_of_a_single_slice_falls_back_to_one_mm(tmp_path: Path) -> None:
    one = tmp_path / "one.dcm"
    ds = pydicom.dcmread(hostile.CT5N / "2392")
    ds.SliceThickness = 0
    ds.save_as(one)
    with open_source(one) as src:
        assert src.reference.spacing[0] == 1.0
    hostile.set_raw(ds, "SliceThickness", b"nan")
    ds.save_as(one)
    with pytest.raises(DicomHeaderError, match="SliceThickness is 'nan', not finite"):
        open_source(one)


def test_zarr_of_non_numbers_is_refused(tmp_path: Path) -> None:
    zarr.create_array(tmp_path / "s.zarr", shape=(4, 4), chunks=(4, 4), dtype="bool")  # bool reads as numbers
    open_source(tmp_path / "s.zarr").close()
    meta = tmp_path / "t.zarr"
    meta.mkdir()
    (meta / ".zarray").write_text(
        json.dumps({"zarr_format": 2, "shape": [4, 4], "chunks": [4, 4], "dtype": "<M8[s]", "compressor": None,
                    "fill_value": 0, "order": "C", "filters": None})
    )  # fmt: skip
    with pytest.raises(SourceOpenError, match="t.zarr"):
        open_source(meta)
