"""CogSink: a real COG with georef, colours and class names, appearing only when complete."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp, MaskFlags

from tiling import GeoRef, SinkError, SinkFinalizedError, Window
from tiling.formats.geotiff.writer import CogSink, probs_path_for

GEOREF = GeoRef(crs="EPSG:32633", transform=(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0), nodata=None)


def _fill(sink: CogSink, shape: tuple[int, int], block: int = 256) -> np.ndarray:
    full = np.zeros(shape, np.uint8)
    for r in range(0, shape[0], block):
        for c in range(0, shape[1], block):
            w = Window((r, c), (min(block, shape[0] - r), min(block, shape[1] - c)))
            labels = ((np.indices(w.shape).sum(0) + r + c) % 3).astype(np.uint8)
            probs = np.stack([labels == k for k in range(3)]).astype(np.float32)
            sink.write(w, labels, probs)
            full[w.to_slices()] = labels
    return full


def test_writes_a_cog_with_georef_overviews_colours_and_names(tmp_path) -> None:
    out = tmp_path / "mask.tif"
    sink = CogSink(out, (700, 900), GEOREF, ["soil", "water", "trees"], save_probs=True)
    assert not out.exists(), "nothing under the final name before finalize"
    expected = _fill(sink, (700, 900))
    assert sink.finalize()[0] == out
    with rasterio.open(out) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert (ds.width, ds.height, ds.crs.to_epsg()) == (900, 700, 32633)
        assert tuple(ds.transform)[:6] == GEOREF.transform
        assert ds.nodata == 255 and ds.block_shapes[0] == (256, 256) and ds.compression.name == "deflate"
        assert ds.overviews(1), "overviews for zoomed-out display"
        assert ds.colormap(1)[1][:3] == (255, 127, 14)
        assert ds.tags(1)["CLASS_2"] == "trees"
        np.testing.assert_array_equal(ds.read(1), expected)
    with rasterio.open(probs_path_for(out)) as ds:
        assert ds.count == 3 and ds.descriptions == ("soil", "water", "trees")
        np.testing.assert_array_equal(ds.read(2) == 255, expected == 1)
    # the QGIS style and the STAC Item are published with the mask (see test_sidecars.py)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.json", "mask.probs.tif", "mask.qml", "mask.tif"]


@pytest.mark.parametrize("names", [["soil", "water", "trees"], ["soil", "water", "trees", "roofs"]])
def test_probabilities_are_plain_bands_never_rgb_or_alpha(tmp_path, names) -> None:
    # 3 or 4 uint8 bands read as RGB(A) unless said otherwise: p(class 4) would be transparency
    out = tmp_path / "mask.tif"
    sink = CogSink(out, (64, 64), GEOREF, names, save_probs=True)
    probs = np.full((len(names), 64, 64), 0.25, np.float32)
    probs[-1] = 0.0  # the last class nowhere: as alpha, every pixel would be transparent
    sink.write(Window((0, 0), (64, 64)), np.zeros((64, 64), np.uint8), probs)
    sink.finalize()
    with rasterio.open(probs_path_for(out)) as ds:
        assert ds.photometric is None or ds.photometric.name == "minisblack"
        assert ds.tags(ns="IMAGE_STRUCTURE").get("PHOTOMETRIC", "MINISBLACK") == "MINISBLACK"
        assert ColorInterp.alpha not in ds.colorinterp
        assert set(ds.colorinterp) <= {ColorInterp.gray, ColorInterp.undefined}
        assert all(MaskFlags.alpha not in flags for flags in ds.mask_flag_enums)
        assert ds.dataset_mask().all(), "every pixel is valid"
        assert ds.descriptions == tuple(names)


def test_abort_leaves_nothing(tmp_path) -> None:
    sink = CogSink(tmp_path / "mask.tif", (64, 64), GEOREF, ["a", "b"], save_probs=True)
    sink.write(Window((0, 0), (64, 64)), np.zeros((64, 64), np.uint8), None)
    sink.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SinkFinalizedError):
        sink.write(Window((0, 0), (64, 64)), np.zeros((64, 64), np.uint8), None)


def test_finalize_twice_raises(tmp_path) -> None:
    sink = CogSink(tmp_path / "m.tif", (16, 16), GEOREF, ["a"])
    sink.write(Window((0, 0), (16, 16)), np.zeros((16, 16), np.uint8), None)
    sink.finalize()
    with pytest.raises(SinkFinalizedError):
        sink.finalize()


@pytest.mark.parametrize("where", ["missing", "file", "dir"])
def test_unwritable_output_fails_before_any_work(tmp_path, where: str) -> None:
    if where == "missing":
        out = tmp_path / "no" / "such" / "m.tif"
    elif where == "file":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "m.tif"
    else:
        out = tmp_path / "d"
        out.mkdir()
    with pytest.raises(SinkError, match="cannot write output"):
        CogSink(out, (16, 16), GEOREF, ["a"])
    assert [p.name for p in tmp_path.iterdir()] in ([], ["f"], ["d"])
