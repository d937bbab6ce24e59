"""Zarr source and OME-Zarr sink: reads against zarr itself, metadata, round trips, atomic output."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ome_zarr_models.v04 import Image, ImageLabel

from tests.conftest import SHARED
from tiling.core.windows import Window, clip, plan_windows
from tiling.errors import SinkError, SinkFinalizedError, SourceOpenError, SourceReadError, WindowError
from tiling.formats import spec_of
from tiling.formats.base import SinkRequest
from tiling.formats.zarr.reader import ZarrSource
from tiling.formats.zarr.writer import OmeZarrSink

DATA = SHARED / "zarr"
LANDSAT = DATA / "rgb_byte_landsat.ome.zarr"
ECT = DATA / "ect_supplemental_v05.ome.zarr"
ASTRONAUT = DATA / "zarr_implementations_astronaut.zr"


def _padded(arr: np.ndarray, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Reference read over the last ``window.ndim`` axes of ``arr``, zero-padded outside."""
    lead = arr.shape[: arr.ndim - window.ndim]
    data = np.zeros((*lead, *window.shape), arr.dtype)
    valid = np.zeros(window.shape, bool)
    try:
        inside = clip(window, arr.shape[-window.ndim :])
    except WindowError:
        return data, valid
    dst = inside.relative_to(window).to_slices()
    data[(..., *dst)] = arr[(..., *inside.to_slices())]
    valid[dst] = True
    return data, valid


# -- source ------------------------------------------------------------------------------------


def test_ome_04_levels_scale_and_axes() -> None:
    with ZarrSource(LANDSAT) as src:
        assert src.axes == ("y", "x") and src.array_axes == ("c", "y", "x")
        assert src.shape == (718, 791) and src.count == 3 and src.dtype == np.uint8
        assert src.block_shape == (256, 256) and src.levels == ("0", "1")
        assert src.reference.scale == pytest.approx((300.041782729805, 300.0379266750948))
        assert src.reference.translation == (0.0, 0.0) and src.reference.units == ("meter", "meter")
    with ZarrSource(LANDSAT, level=1) as src:
        assert src.shape == (359, 395)
        assert src.reference.scale == pytest.approx((600.08356545961, 600.0758533501896))


def test_ome_05_sharded_volume() -> None:
    with ZarrSource(ECT) as src:
        assert src.axes == ("z", "y", "x") and src.count == 1 and src.dtype == np.uint16
        assert src.shape == (2, 512, 512)
        assert src.block_shape == (1, 256, 256)  # the inner chunk, the unit a read decodes
        assert src.reference.scale == pytest.approx((10.0, 0.388672, 0.388672))
        assert src.reference.units == ("millimeter",) * 3
        data, valid = src.read(Window((1, 500, 0), (2, 20, 8)))
    ref = zarr.open_group(ECT, mode="r")["0"][1:, 500:, :8]
    np.testing.assert_array_equal(data[0, :1, :12], ref)
    assert valid.sum() == 12 * 8 and not data[0, 1].any()


def test_missing_level_lists_the_levels_that_exist() -> None:
    with pytest.raises(SourceOpenError, match=r"rgb_byte_landsat.ome.zarr: has no level 2; levels 0 to 1 exist"):
        ZarrSource(LANDSAT, level=2)


@settings(max_examples=30, deadline=None)
@given(r=st.integers(-100, 750), c=st.integers(-100, 800), h=st.integers(1, 300), w=st.integers(1, 300))
def test_landsat_windows_match_zarr(r: int, c: int, h: int, w: int) -> None:
    full = _landsat_level0()
    window = Window((r, c), (h, w))
    with ZarrSource(LANDSAT) as src:
        data, valid = src.read(window)
    ref, ref_valid = _padded(full, window)
    np.testing.assert_array_equal(valid, ref_valid)
    np.testing.assert_array_equal(data, ref)


_CACHE: dict[str, np.ndarray] = {}


def _landsat_level0() -> np.ndarray:
    if "landsat" not in _CACHE:
        _CACHE["landsat"] = zarr.open_group(LANDSAT, mode="r")["0"][:]
    return _CACHE["landsat"]


def test_plain_v2_array_with_interleaved_channels() -> None:
    arr = zarr.open_group(ASTRONAUT, mode="r")["blosc"][:]
    with ZarrSource(ASTRONAUT, axes="yxc") as src:
        assert src.shape == (512, 512) and src.count == 3 and src.block_shape == (100, 100)
        assert src.array_path == "blosc"
        data, valid = src.read(Window((90, 190), (30, 30)))
    np.testing.assert_array_equal(data, np.moveaxis(arr[90:120, 190:220], -1, 0))
    assert valid.all()
    with ZarrSource(ASTRONAUT) as src:  # no names: a 3-D array is (z, y, x)
        assert src.axes == ("z", "y", "x") and src.shape == (512, 512, 3) and src.count == 1


def test_spec_reopens_the_same_array() -> None:
    with ZarrSource(ASTRONAUT, axes="yxc") as src:
        spec = pickle.loads(pickle.dumps(spec_of(src)))
        assert spec.format == "zarr"
        with spec.open() as again:
            assert (again.shape, again.count, again.axes) == (src.shape, src.count, src.axes)


def test_groups_with_several_arrays_need_a_choice(tmp_path: Path) -> None:
    g = zarr.open_group(tmp_path / "g.zarr", mode="w")
    g.create_array("a", shape=(4, 4), dtype="u1")
    g.create_array("b", shape=(6, 6), dtype="u1")
    with pytest.raises(SourceOpenError, match=r"holds arrays \['a', 'b'\]; pass array="):
        ZarrSource(tmp_path / "g.zarr")
    with ZarrSource(tmp_path / "g.zarr", array="b") as src:
        assert src.shape == (6, 6)
    with pytest.raises(SourceOpenError, match="has no array 'c'"):
        ZarrSource(tmp_path / "g.zarr", array="c")


def test_not_zarr_or_missing(tmp_path: Path) -> None:
    with pytest.raises(SourceOpenError, match="no such Zarr store"):
        ZarrSource(tmp_path / "nope.zarr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceOpenError, match="not a Zarr array or group"):
        ZarrSource(tmp_path / "empty")


def test_unusable_axes_are_rejected(tmp_path: Path) -> None:
    zarr.create_array(tmp_path / "a.zarr", shape=(2, 3, 4, 5), dtype="u1")
    with pytest.raises(SourceOpenError, match="pass axes="):
        ZarrSource(tmp_path / "a.zarr")
    with ZarrSource(tmp_path / "a.zarr", axes="czyx") as src:
        assert src.shape == (3, 4, 5) and src.count == 2
        assert src.read(Window((0, 0, 0), (3, 4, 5)))[0].shape == (2, 3, 4, 5)


def test_dimension_names_and_a_single_time_point(tmp_path: Path) -> None:
    a = zarr.create_array(
        tmp_path / "t.zarr", shape=(1, 6, 5), chunks=(1, 3, 3), dtype="f4", dimension_names=("t", "y", "x")
    )
    values = np.arange(30, dtype="f4").reshape(1, 6, 5)
    values[0, 2, 3] = np.nan
    a[:] = values
    with ZarrSource(tmp_path / "t.zarr") as src:
        assert src.axes == ("y", "x") and src.shape == (6, 5) and src.block_shape == (3, 3)
        data, valid = src.read(Window((0, 0), (6, 5)))
    assert not valid[2, 3] and valid.sum() == 29 and data[0, 2, 3] == 0  # NaN is not valid
    np.testing.assert_array_equal(data[0][valid], values[0][valid])


def test_reads_touch_only_the_chunks_in_the_window(tmp_path: Path) -> None:
    a = zarr.create_array(tmp_path / "c.zarr", shape=(8, 8), chunks=(4, 4), dtype="f4")
    a[:] = np.arange(64, dtype="f4").reshape(8, 8)
    (tmp_path / "c.zarr" / "c" / "1" / "1").write_bytes(b"not a zstd frame")  # corrupt chunk (1, 1)
    with ZarrSource(tmp_path / "c.zarr") as src:
        data, _ = src.read(Window((0, 0), (8, 4)))  # chunks (0, 0) and (1, 0) only
        np.testing.assert_array_equal(data[0], np.arange(64).reshape(8, 8)[:, :4])
        with pytest.raises(SourceReadError, match=r"c.zarr: cannot read window"):
            src.read(Window((3, 3), (2, 2)))


def test_source_rejects_windows_of_the_wrong_rank() -> None:
    with ZarrSource(ECT) as src, pytest.raises(WindowError, match="3-axis"):
        src.read(Window((0, 0), (4, 4)))


# -- sink --------------------------------------------------------------------------------------------


def _labels_for(src: ZarrSource) -> np.ndarray:
    """Deterministic labels from the image itself, with a nodata patch."""
    data, _ = src.read(Window((0,) * len(src.shape), src.shape))
    labels = (data.mean(axis=0) > np.median(data)).astype(np.uint8)
    labels[(slice(0, 1),) * labels.ndim] = 255
    return labels


def _write_by_chunks(sink: OmeZarrSink, labels: np.ndarray, chunks: tuple[int, ...]) -> None:
    for w in plan_windows(labels.shape, chunks, chunks, edge="pad"):
        w = clip(w, labels.shape)
        sink.write(w, labels[w.to_slices()])


@pytest.mark.parametrize("store", [LANDSAT, ECT], ids=["landsat-0.4", "ect-0.5"])
def test_ome_round_trip_keeps_shape_chunks_and_scale(tmp_path: Path, store: Path) -> None:
    out = tmp_path / "mask.ome.zarr"
    with ZarrSource(store) as src:
        labels = _labels_for(src)
        sink = OmeZarrSink.for_source(out, src, SinkRequest(("low", "high")))
        _write_by_chunks(sink, labels, src.block_shape)
        assert not out.exists()  # only a hidden temporary store so far
        assert sink.finalize()[0] == out
    assert [p.name for p in tmp_path.iterdir()] == ["mask.ome.zarr"]

    group = zarr.open_group(out, mode="r")
    level0 = group["0"]
    assert level0.shape == src.shape and level0.chunks == src.block_shape and level0.dtype == np.uint8
    assert level0.fill_value == 255 and level0.metadata.zarr_format == 2
    np.testing.assert_array_equal(level0[:], labels)
    # level 1 is nearest: every second row and column, z untouched
    np.testing.assert_array_equal(group["1"][:], labels[..., ::2, ::2])

    image = Image.from_zarr(group)  # NGFF 0.4 schema validation
    ImageLabel.from_zarr(group)
    ms = image.attributes.multiscales[0]
    assert [a.name for a in ms.axes] == list(src.axes)
    scale0 = ms.datasets[0].coordinateTransformations[0].scale
    scale1 = ms.datasets[1].coordinateTransformations[0].scale
    assert scale0 == pytest.approx(src.reference.scale)
    assert scale1 == pytest.approx(
        [*src.reference.scale[:-2], src.reference.scale[-2] * 2, src.reference.scale[-1] * 2]
    )
    attrs = dict(group.attrs)
    assert attrs["tilewise"] == {"class_names": ["low", "high"], "nodata": 255}
    properties = {p["label-value"]: p["class"] for p in attrs["image-label"]["properties"]}
    assert properties == {0: "low", 1: "high", 255: "nodata"}

    with ZarrSource(out) as again:  # and our own reader agrees
        assert (
            again.shape == src.shape
            and again.reference.scale == pytest.approx(src.reference.scale)
            and again.reference.units == src.reference.units
        )
        np.testing.assert_array_equal(again.read(Window((0,) * len(src.shape), src.shape))[0][0], labels)


def test_chunk_keys_use_slashes(tmp_path: Path) -> None:
    sink = OmeZarrSink(tmp_path / "m.zarr", (4, 6), (2, 3), class_names=["a"], downsample=False)
    sink.write(Window((2, 3), (2, 3)), np.ones((2, 3), np.uint8))
    sink.finalize()
    assert (tmp_path / "m.zarr" / "0" / "1" / "1").is_file()
    assert json.loads((tmp_path / "m.zarr" / "0" / ".zarray").read_text())["dimension_separator"] == "/"
    assert not (tmp_path / "m.zarr" / "1").exists()  # downsample=False: level 0 only


def test_probabilities_go_to_their_own_image(tmp_path: Path) -> None:
    sink = OmeZarrSink(tmp_path / "p.zarr", (4, 4), (4, 4), scale=(0.5, 0.5), translation=(10, 20),
                       class_names=["a", "b"], save_probs=True)  # fmt: skip
    probs = np.stack([np.full((4, 4), 0.25), np.full((4, 4), 0.75)]).astype(np.float32)
    sink.write(Window((0, 0), (4, 4)), np.ones((4, 4), np.uint8), probs)
    (out,) = sink.finalize()
    group = zarr.open_group(out / "probs", mode="r")
    np.testing.assert_array_equal(group["0"][:, 0, 0], [64, 191])
    Image.from_zarr(group)
    ms = dict(zarr.open_group(out, mode="r").attrs)["multiscales"][0]
    assert ms["datasets"][0]["coordinateTransformations"][1] == {"type": "translation", "translation": [10.0, 20.0]}


def test_abort_and_misuse(tmp_path: Path) -> None:
    sink = OmeZarrSink(tmp_path / "x.zarr", (4, 4), (2, 2), class_names=["a"])
    sink.write(Window((0, 0), (2, 2)), np.zeros((2, 2), np.uint8))
    sink.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SinkFinalizedError):
        sink.write(Window((0, 0), (2, 2)), np.zeros((2, 2), np.uint8))
    sink = OmeZarrSink(tmp_path / "x.zarr", (4, 4), (2, 2), class_names=["a"])
    with pytest.raises(SinkError, match="not inside the image"):
        sink.write(Window((3, 3), (2, 2)), np.zeros((2, 2), np.uint8))
    with pytest.raises(SinkError, match="labels have shape"):
        sink.write(Window((0, 0), (2, 2)), np.zeros((3, 2), np.uint8))
    sink.finalize()
    with pytest.raises(SinkFinalizedError):
        sink.finalize()
    with pytest.raises(SinkError, match="does not exist"):
        OmeZarrSink(tmp_path / "missing" / "x.zarr", (4, 4), (2, 2), class_names=["a"])


def test_finalize_replaces_an_old_output(tmp_path: Path) -> None:
    for value in (1, 2):
        sink = OmeZarrSink(tmp_path / "x.zarr", (4, 4), (4, 4), class_names=["a", "b", "c"])
        sink.write(Window((0, 0), (4, 4)), np.full((4, 4), value, np.uint8))
        sink.finalize()
    assert (zarr.open_group(tmp_path / "x.zarr", mode="r")["0"][:] == 2).all()
    assert [p.name for p in tmp_path.iterdir()] == ["x.zarr"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 23), st.integers(1, 23)),
    chunks=st.tuples(st.integers(1, 2), st.integers(1, 9), st.integers(1, 9)),
    seed=st.integers(0, 2**16),
)
def test_any_chunking_round_trips(tmp_path_factory: pytest.TempPathFactory, shape, chunks, seed: int) -> None:
    labels = np.random.default_rng(seed).integers(0, 4, shape, dtype=np.uint8)
    out = tmp_path_factory.mktemp("rt") / "v.zarr"
    sink = OmeZarrSink(out, shape, chunks, class_names=["a", "b", "c", "d"])
    _write_by_chunks(sink, labels, tuple(min(c, n) for c, n in zip(chunks, shape)))
    sink.finalize()
    group = zarr.open_group(out, mode="r")
    np.testing.assert_array_equal(group["0"][:], labels)
    if labels.shape[1:] != (1, 1):
        np.testing.assert_array_equal(group["1"][:], labels[:, ::2, ::2])
