"""GeoTiffSource on real samples and on generated bad files."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from tests.conftest import write_scene
from tiling import ConfigError, NotGeoreferencedWarning, Source, SourceOpenError, Window, open_source
from tiling.core.stats import sample_band_stats
from tiling.formats import spec_of
from tiling.formats.geotiff.reader import GeoTiffSource


def test_reads_window_with_dataset_mask(rgb_byte) -> None:
    with open_source(rgb_byte) as src, rasterio.open(rgb_byte) as ref:
        assert isinstance(src, Source)
        assert src.shape == (718, 791) and src.count == 3 and src.dtype == np.uint8
        assert src.block_shape == (3, 791)
        assert src.reference.nodata == 0 and "UTM zone 18N" in src.reference.crs
        w = Window((100, 200), (128, 128))
        data, valid = src.read(w)
        rw = rasterio.windows.Window(200, 100, 128, 128)
        np.testing.assert_array_equal(valid, ref.dataset_mask(window=rw) > 0)
        expected = ref.read(window=rw)
        np.testing.assert_array_equal(data[:, valid], expected[:, valid])
        assert (data[:, ~valid] == 0).all()


def test_window_past_the_edge_is_padded_and_invalid(rgb_byte) -> None:
    with open_source(rgb_byte) as src:
        data, valid = src.read(Window((700, 780), (64, 64)))
        assert data.shape == (3, 64, 64)
        assert not valid[18:].any() and not valid[:, 11:].any()
        assert (data[:, 18:] == 0).all()


def test_alpha_band_is_the_mask(shared_data) -> None:
    path = shared_data / "geotiff" / "rasterio" / "alpha.tif"
    with open_source(path) as src, rasterio.open(path) as ref:
        _, valid = src.read(Window((0, 0), src.shape))
        np.testing.assert_array_equal(valid, ref.dataset_mask() > 0)
        assert 0 < valid.mean() < 0.05  # SOURCES.md: 1.6 % opaque


def test_float_nodata_and_nan_are_invalid(shared_data, tmp_path) -> None:
    path = shared_data / "geotiff" / "rasterio" / "float_raster_with_nodata.tif"
    with open_source(path) as src, rasterio.open(path) as ref:
        assert src.dtype == np.float32
        data, valid = src.read(Window((0, 0), src.shape))
        np.testing.assert_array_equal(valid, ref.read(1) != ref.nodata)
    img = np.ones((1, 32, 32), np.float32)
    img[0, 5, 7] = np.nan
    with open_source(write_scene(tmp_path / "nan.tif", img, block=None)) as src:
        data, valid = src.read(Window((0, 0), (32, 32)))
    assert not valid[5, 7] and valid.sum() == 32 * 32 - 1
    assert np.isfinite(data).all()


def test_band_selection(shared_data) -> None:
    path = shared_data / "geotiff" / "solaris" / "ms1.tif"  # 4-band float64
    with open_source(path, bands=(4, 2)) as src, rasterio.open(path) as ref:
        assert src.count == 2 and src.dtype == np.float32
        data, _ = src.read(Window((0, 0), (16, 16)))
        np.testing.assert_allclose(data[0], ref.read(4, window=((0, 16), (0, 16))), rtol=1e-6)
    with pytest.raises(ConfigError, match="band 5 does not exist; the file has 4 band"):
        open_source(path, bands=(5,))


def test_missing_and_not_a_raster(tmp_path) -> None:
    with pytest.raises(SourceOpenError, match="no such file"):
        open_source(tmp_path / "nope.tif")
    junk = tmp_path / "junk.tif"
    junk.write_text("this is not a raster\n")
    with pytest.raises(SourceOpenError, match="junk.tif: not a readable raster"):
        open_source(junk)


def test_truncated_file_is_caught_at_open(tmp_path, scene_factory) -> None:
    path = scene_factory(256, 256)
    data = path.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceOpenError, match="cut.tif: truncated file"):
        GeoTiffSource(cut)


def test_no_crs_warns(tmp_path) -> None:
    path = write_scene(tmp_path / "plain.tif", np.ones((1, 8, 8), np.uint8), crs=None)
    with pytest.warns(NotGeoreferencedWarning, match="plain.tif"):
        src = open_source(path)
    assert src.reference.crs is None
    src.close()


def test_spec_reopens_the_same_source(rgb_byte) -> None:
    with open_source(rgb_byte, bands=(3, 1)) as src:
        spec = spec_of(src)
        with spec.open() as again:
            assert again.bands == (3, 1) and again.shape == src.shape


def test_band_stats_sample_is_close_to_the_full_statistics(rgb_byte) -> None:
    with open_source(rgb_byte) as src, rasterio.open(rgb_byte) as ref:
        mean, std = sample_band_stats(src)
        full = ref.read(masked=True)
        for b in range(3):
            assert abs(mean[b] - full[b].mean()) < 0.15 * full[b].mean()
            assert std[b] > 0
