"""The contract every registered format passes (zarr-python's StoreTests, for tilewise formats).

Sources: padded reads past the edge, the valid mask, a pickled spec that
reopens the same source. Sinks: ``finalize`` publishes atomically and
returns every path it wrote, ``abort`` leaves nothing, a second
``finalize`` and a late write are refused. A format added to the registry
without a case here fails :func:`test_every_registered_format_has_a_case`.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED
from tests.support import npy_format
from tiling import formats
from tiling.core import Window, plan_windows
from tiling.core.windows import clip
from tiling.errors import SinkFinalizedError, SourceTooLargeError
from tiling.formats import BUILTIN, open_sink, open_source, spec_of
from tiling.formats.base import SinkRequest, Source, SourceLimits


@dataclass(frozen=True)
class Case:
    """A real sample of one format, and the suffix its own sink writes."""

    id: str
    format: str
    path: Path
    suffix: str


CASES = [
    Case("geotiff-rgb-nodata", "geotiff", SHARED / "geotiff/rasterio/RGB.byte.tif", ".tif"),
    Case("geotiff-float-nodata", "geotiff", SHARED / "geotiff/rasterio/float_raster_with_nodata.tif", ".tif"),
    Case("dicom-series", "dicom", SHARED / "dicom/series/pydicom_98892001_CT5N", ".dcm"),
    Case("dicom-multiframe", "dicom", SHARED / "dicom/pydicom-data/eCT_Supplemental.dcm", ".dcm"),
    Case("dicom-slide", "dicom", SHARED / "dicom/highdicom/sm_image.dcm", ".dcm"),
    Case("zarr-ome-0.4", "zarr", SHARED / "zarr/rgb_byte_landsat.ome.zarr", ".zarr"),
    Case("zarr-ome-0.5-volume", "zarr", SHARED / "zarr/ect_supplemental_v05.ome.zarr", ".zarr"),
    Case("npy-toy", "npy", Path("generated"), ".npy"),
]


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request, tmp_path_factory) -> Case:
    c: Case = request.param
    if c.format == "npy":
        formats.register(npy_format.LOCATOR)
        request.addfinalizer(lambda: formats.unregister("npy"))
        path = tmp_path_factory.mktemp("npy") / "toy.npy"
        np.save(path, np.arange(2 * 30 * 20, dtype=np.uint16).reshape(2, 30, 20))
        return Case(c.id, c.format, path, c.suffix)
    return c


def _overrunning_window(shape: tuple[int, ...]) -> Window:
    """A window over the last cells of every axis, running past the end (volumes: the last slice)."""
    size = [1 if len(shape) == 3 and a == 0 else min(n, 16) for a, n in enumerate(shape)]
    start = [n - 1 if len(shape) == 3 and a == 0 else n - k // 2 for a, (n, k) in enumerate(zip(shape, size))]
    return Window(tuple(start), tuple(size))


def test_every_registered_format_has_a_case() -> None:
    # formats that read images; label-only formats and dataset layouts have their own contract
    # (tests/tiling/formats/test_labels.py)
    readers = {name for name in BUILTIN if formats.get_format(name).open_source is not None}
    assert readers <= {c.format for c in CASES}


def test_sniffing_finds_the_format(case: Case) -> None:
    assert formats.sniff(case.path).name == case.format


def test_padded_read_past_the_edge(case: Case) -> None:
    with open_source(case.path) as src:
        w = _overrunning_window(src.shape)
        data, valid = src.read(w)
        assert data.shape == (src.count, *w.shape) and data.dtype == src.dtype
        assert valid.shape == w.shape and valid.dtype == bool
        inside = clip(w, src.shape)
        rel = inside.relative_to(w).to_slices()
        outside = np.ones(w.shape, bool)
        outside[rel] = False
        assert outside.any(), "the window must overrun"
        assert not valid[outside].any() and not data[:, outside].any(), "padding is zero and invalid"
        inner_data, inner_valid = src.read(inside)
        np.testing.assert_array_equal(data[(slice(None), *rel)], inner_data)
        np.testing.assert_array_equal(valid[rel], inner_valid)


def test_window_wholly_outside_reads_as_padding(case: Case) -> None:
    with open_source(case.path) as src:
        w = Window(tuple(n + 5 for n in src.shape), (1,) * len(src.shape))
        data, valid = src.read(w)
        assert not valid.any() and not data.any()


def test_invalid_pixels_are_zero(case: Case) -> None:
    with open_source(case.path) as src:
        whole = Window(
            (0,) * len(src.shape), tuple(1 if len(src.shape) == 3 and a == 0 else n for a, n in enumerate(src.shape))
        )
        data, valid = src.read(whole)
        assert not data[:, ~valid].any()
        if case.id.endswith("nodata"):
            assert (~valid).any() and valid.any(), "this sample has nodata and valid pixels"


def test_size_limits_are_checked_for_every_format(case: Case) -> None:
    """The registry checks what any source claims (shape, count), whatever its format; the chunk
    check uses ``block_shape`` and ``dtype`` alike (tests/tiling/formats/test_limits.py)."""
    with open_source(case.path) as src:
        pixels, count = int(np.prod(src.shape)), src.count
    open_source(case.path, limits=SourceLimits(max_pixels=pixels, max_bands=count)).close()
    with pytest.raises(SourceTooLargeError, match=f"--max-pixels {pixels}"):
        open_source(case.path, limits=SourceLimits(max_pixels=pixels - 1))
    if count > 1:
        with pytest.raises(SourceTooLargeError, match=f"--max-bands {count}"):
            open_source(case.path, limits=SourceLimits(max_bands=count - 1))


def test_pickled_spec_reopens_the_same_source(case: Case) -> None:
    with open_source(case.path) as src:
        spec = pickle.loads(pickle.dumps(spec_of(src)))
        assert (spec.path, spec.format) == (str(case.path), case.format)
        with spec.open() as again:
            assert isinstance(again, Source)
            for attr in ("shape", "count", "dtype", "block_shape", "reference", "options", "format"):
                assert getattr(again, attr) == getattr(src, attr), attr
            w = _overrunning_window(src.shape)
            np.testing.assert_array_equal(again.read(w)[0], src.read(w)[0])


def _fill(sink, shape: tuple[int, ...]) -> None:
    for w in plan_windows(shape, sink.block, sink.block, edge="pad"):
        w = clip(w, shape)
        sink.write(w, np.ones(w.shape, np.uint8), None)


def test_finalize_publishes_atomically_and_refuses_a_second_time(case: Case, tmp_path: Path) -> None:
    out = tmp_path / f"mask{case.suffix}"
    with open_source(case.path) as src:
        sink = open_sink(out, src, case.format, SinkRequest(("a", "b")))
        _fill(sink, tuple(src.shape))
    assert not out.exists(), "nothing under the final name before finalize"
    published = sink.finalize()
    assert published[0] == out and out.exists()
    assert sorted(tmp_path.iterdir()) == sorted(published), "no temporary files left beside the outputs"
    with pytest.raises(SinkFinalizedError):
        sink.finalize()
    with pytest.raises(SinkFinalizedError):
        sink.write(
            Window((0,) * len(sink.shape), (1,) * len(sink.shape)), np.zeros((1,) * len(sink.shape), np.uint8), None
        )


def test_abort_leaves_nothing(case: Case, tmp_path: Path) -> None:
    out = tmp_path / f"mask{case.suffix}"
    with open_source(case.path) as src:
        sink = open_sink(out, src, case.format, SinkRequest(("a", "b"), save_probs=True))
        first = clip(Window((0,) * len(src.shape), sink.block), src.shape)
        sink.write(first, np.zeros(first.shape, np.uint8), np.zeros((2, *first.shape), np.float32))
    sink.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SinkFinalizedError):
        sink.finalize()
