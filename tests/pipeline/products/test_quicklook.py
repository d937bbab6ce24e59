"""--quicklook: the source with the mask on top and a legend, from overviews or mid-slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from pipeline.products import quicklook, quicklook_path_for
from pipeline.products.quicklook import OVERLAY_ALPHA
from tests.conftest import SHARED, write_scene
from tiling import Window
from tiling.core.labels import class_color
from tiling.errors import ConfigError, SinkError
from tiling.formats import open_sink, open_source
from tiling.formats.base import SinkRequest

CT5N = SHARED / "dicom" / "series" / "pydicom_98892001_CT5N"
SLIDE = SHARED / "dicom" / "highdicom" / "sm_image.dcm"
#: A real 2-slice CT as OME-Zarr: (2, 512, 512), 10 mm slices of 0.39 mm pixels.
ECT = SHARED / "zarr" / "ect_supplemental_v05.ome.zarr"


def _expected(grey: int, k: int) -> np.ndarray:
    """The colour of class ``k`` blended over a grey source pixel."""
    return np.rint((1 - OVERLAY_ALPHA) * grey + OVERLAY_ALPHA * np.array(class_color(k))).astype(int)


def _mask(source: Path, out: Path, labels_of, **request) -> tuple[Path, ...]:
    with open_source(source) as src:
        data, valid = src.read(Window((0,) * len(src.shape), src.shape))
        labels = labels_of(data, valid)
        sink = open_sink(out, src, None, SinkRequest(("low", "high"), **request))
        sink.write(Window((0,) * len(src.shape), src.shape), labels, None)
    return sink.finalize()


def test_map_quicklook_is_decimated_from_the_overviews(tmp_path: Path) -> None:
    data = np.full((3, 1200, 900), 128, np.uint8)
    data[:, :, 450:] = 200
    src = write_scene(tmp_path / "scene.tif", data, block=256)
    with rasterio.open(src, "r+") as ds:
        ds.build_overviews([2, 4, 8])
    (mask, *_) = _mask(src, tmp_path / "m.tif", lambda d, v: (d[0] > 150).astype(np.uint8))
    out = quicklook(src, mask, size=300, class_names=["low", "high"])
    assert out == quicklook_path_for(mask) == tmp_path / "m.quicklook.png"
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    legend_and_title = 26
    assert img.shape[0] == 300 + legend_and_title and img.shape[1] > 225, "longest side 300, plus legend"
    body = img[legend_and_title:, :225]
    # the source is uniform per half, so the 2-98 % stretch maps it to 0 and 255
    assert np.abs(body[150, 20] - _expected(0, 0)).max() <= 1
    assert np.abs(body[150, 200] - _expected(255, 1)).max() <= 1
    legend = img[legend_and_title + 2 : legend_and_title + 14, 225 + 12]
    assert (np.abs(legend - np.array(class_color(0))).max(axis=1) <= 1).any(), "the legend's first swatch"


@pytest.mark.parametrize("suffix", [".dcm", ".zarr"])
def test_volume_quicklook_is_a_triptych_of_mid_slices(tmp_path: Path, suffix: str) -> None:
    def labels_of(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
        labels = np.zeros(data.shape[1:], np.uint8)
        labels[:, :, 8:] = 1  # right half of every slice
        return labels

    (mask,) = _mask(CT5N, tmp_path / f"seg{suffix}", labels_of)
    out = quicklook(CT5N, mask, window="soft-tissue", size=120)
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    body = img[26 : 26 + 120]
    with open_source(CT5N) as src:
        (nz, ny, nx), spacing = src.shape, src.reference.spacing
    widths = [120, round(120 * nx * spacing[2] / (nz * spacing[0])), round(120 * ny * spacing[1] / (nz * spacing[0]))]
    assert img.shape[1] >= sum(widths) + 16, "three panels at their physical aspect"
    axial = body[:, :120]
    tinted = np.abs(axial.astype(int) - axial[:, :, [0]]).sum(axis=2) > 30  # class colours are not grey
    assert tinted[:, 60:].all() and tinted[:, :60].any(), "every pixel carries its class colour"
    legend = img[26 + 2 : 26 + 2 + 2 * 18, -60:].reshape(-1, 3)
    for k in (0, 1):  # the legend names the mask's classes (read from the mask itself)
        assert (np.abs(legend - np.array(class_color(k))).max(axis=1) <= 1).any()


def test_whole_slide_seg_quicklook_is_refused(tmp_path: Path) -> None:
    (mask,) = _mask(SLIDE, tmp_path / "s.dcm", lambda d, v: np.zeros(d.shape[1:], np.uint8))
    with pytest.raises(ConfigError, match="whole-slide DICOM SEG is not supported"):
        quicklook(SLIDE, mask)
    assert not quicklook_path_for(mask).exists()


def test_a_thin_volume_makes_panels_that_fit_the_size_not_a_huge_strip(tmp_path: Path) -> None:
    # a 2-slice CT (10 mm slices, 0.39 mm pixels) made a 21515 px wide PNG at the default size
    (mask,) = _mask(ECT, tmp_path / "seg.zarr", lambda d, v: np.zeros(d.shape[1:], np.uint8))
    out = quicklook(ECT, mask, window="soft-tissue", size=120)
    with Image.open(out) as im:
        width, height = im.size
    assert height <= 120 + 26 + 2 * 18 and width <= 3 * 120 + 16 + 200, (width, height)
    assert width >= 120 + 2 * 8, "still three panels: the axial one at full size"


def test_colours_are_the_runs_and_the_png_carries_tilewises_mark(tmp_path: Path) -> None:
    data = np.full((3, 64, 64), 128, np.uint8)
    data[:, :, 32:] = 200
    src = write_scene(tmp_path / "scene.tif", data)
    colors = ((10, 200, 30), (200, 20, 220))
    (mask, *_) = _mask(src, tmp_path / "m.tif", lambda d, v: (d[0] > 150).astype(np.uint8), class_colors=colors)
    out = quicklook(src, mask, size=64)  # the colours come from the mask's colour table
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    blend = np.rint((1 - OVERLAY_ALPHA) * 255 + OVERLAY_ALPHA * np.array(colors[1])).astype(int)
    assert np.abs(img[26 + 32, 50] - blend).max() <= 1
    legend = img[26 + 2 : 26 + 14, 64 + 12]
    assert (np.abs(legend - np.array(colors[0])).max(axis=1) <= 1).any(), "the legend's first swatch"
    with Image.open(out) as im:
        assert im.text["Software"].startswith("tilewise")
    with pytest.raises(ConfigError, match="exists; pass --overwrite"):
        quicklook(src, mask, size=64)
    assert quicklook(src, mask, size=32, overwrite=True) == out
    theirs = tmp_path / "theirs.png"
    Image.new("RGB", (4, 4)).save(theirs)
    with pytest.raises(SinkError, match="not written by tilewise"):
        quicklook(src, mask, out=theirs, overwrite=True)
    assert Image.open(theirs).size == (4, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m.json", "m.qml", "m.quicklook.png", "m.tif", "scene.tif", "theirs.png"
    ]  # fmt: skip
