"""Window arithmetic and tile planning, including hypothesis properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import plans
from tiling import ConfigError, Window, WindowError, plan_windows
from tiling.core.windows import axis_starts, clip, core_bounds, intersection, intersects, plan_count

windows2d = st.builds(
    lambda r, c, h, w: Window((r, c), (h, w)),
    st.integers(0, 50), st.integers(0, 50), st.integers(1, 30), st.integers(1, 30),
)  # fmt: skip


def test_window_validates_its_fields() -> None:
    with pytest.raises(WindowError, match="same length"):
        Window((0,), (1, 2))
    with pytest.raises(WindowError, match="positive"):
        Window((0, 0), (0, 2))
    with pytest.raises(WindowError, match="integers"):
        Window((0.5, 0), (1, 2))


def test_slices_round_trip() -> None:
    w = Window((3, 4), (5, 6))
    assert Window.from_slices(w.to_slices()) == w
    assert np.zeros((20, 20))[w.to_slices()].shape == (5, 6)


def test_empty_intersection_raises_and_intersects_is_false() -> None:
    a, b = Window((0, 0), (2, 2)), Window((2, 0), (2, 2))
    assert not intersects(a, b)
    with pytest.raises(WindowError, match="do not intersect"):
        intersection(a, b)


@given(windows2d, windows2d)
def test_intersection_is_symmetric_and_inside_both(a: Window, b: Window) -> None:
    assert intersects(a, b) == intersects(b, a)
    if intersects(a, b):
        i = intersection(a, b)
        assert i == intersection(b, a)
        for w in (a, b):
            assert all(s >= ws and e <= we for s, e, ws, we in zip(i.start, i.stop, w.start, w.stop))


@given(plans())
def test_plan_covers_every_pixel_and_count_matches_formula(plan) -> None:
    shape, tile, stride, edge = plan
    windows = plan_windows(shape, tile, stride, edge)
    assert len(windows) == plan_count(shape[0], tile, stride) * plan_count(shape[1], tile, stride)
    cover = np.zeros(shape, int)
    for w in windows:
        cover[clip(w, shape).to_slices()] += 1
        assert all(s >= 0 for s in w.start)
        assert all(s < n for s, n in zip(w.start, shape))  # every window starts inside
        if edge == "shift":  # ... and, unless the axis is shorter than a tile, ends inside
            assert all(e <= n or t > n for e, n, t in zip(w.stop, shape, w.shape))
    assert cover.min() >= 1


@given(st.integers(1, 300), st.integers(1, 64))
def test_stride_equal_to_tile_means_no_overlap_with_pad(size: int, tile: int) -> None:
    cover = np.zeros((size, 1), int)
    for w in plan_windows((size, 1), (tile, 1), (tile, 1), "pad"):
        cover[clip(w, (size, 1)).to_slices()] += 1
    assert (cover == 1).all()


@given(st.integers(1, 300), st.integers(1, 64), st.data())
def test_cores_partition_the_axis(size: int, tile: int, data) -> None:
    stride = data.draw(st.integers(1, tile))
    starts = axis_starts(size, tile, stride, data.draw(st.sampled_from(["shift", "pad"])))
    bounds = core_bounds(starts, tile, size)
    assert bounds[0][0] == 0 and bounds[-1][1] == size
    for (lo, hi), (nlo, _), s in zip(bounds, [*bounds[1:], (size, size)], starts):
        assert lo < hi == nlo  # contiguous, non-empty
        assert s <= lo and hi <= s + tile  # a core lies inside its window


def test_bad_edge_mode_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match="did you mean 'shift'"):
        axis_starts(10, 4, 2, "shfit")
