"""TileGrid: validation, block alignment and the center cores."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tiling import ConfigError, TileGrid, Window
from tiling.core.windows import clip


@pytest.mark.parametrize("tile", [0, -5])
def test_tile_must_be_positive(tile: int) -> None:
    with pytest.raises(ConfigError, match="tile size must be a positive integer"):
        TileGrid((100, 100), tile)


@pytest.mark.parametrize("overlap", [-0.1, 1.0, 1.5])
def test_overlap_must_be_in_unit_interval(overlap: float) -> None:
    with pytest.raises(ConfigError, match=r"overlap must be in \[0, 1\)"):
        TileGrid((100, 100), 64, overlap)


def test_stride_snaps_down_to_storage_blocks() -> None:
    grid = TileGrid((4096, 4096), 512, 0.25, block=(256, 256))
    assert grid.stride == (256, 256)  # 384 rounded down to a whole block
    assert all(w.start[0] % 256 == 0 for w in grid.windows[:-1])
    # a block wider than the stride leaves that axis alone (strip layout)
    assert TileGrid((718, 791), 128, 0.25, block=(3, 791)).stride == (96, 96)


@given(
    st.integers(1, 400), st.integers(1, 400), st.integers(8, 128), st.floats(0, 0.8), st.sampled_from(["shift", "pad"])
)
def test_cores_partition_the_scene(rows: int, cols: int, tile: int, overlap: float, edge: str) -> None:
    grid = TileGrid((rows, cols), tile, overlap, edge)
    owner = np.zeros((rows, cols), int)
    for i, w in enumerate(grid.windows):
        core = grid.core(i)
        assert clip(w, (rows, cols)).start <= core.start
        owner[core.to_slices()] += 1
    assert (owner == 1).all()


@given(
    st.tuples(st.integers(1, 120), st.integers(1, 120))
    | st.tuples(st.integers(1, 6), st.integers(1, 60), st.integers(1, 60)),
    st.integers(4, 48),
    st.floats(0.0, 0.9),
    st.sampled_from(["shift", "pad"]),
    st.integers(3, 40),
)
def test_block_counts_and_lazy_windows_match_the_brute_force_plan(shape, tile, overlap, edge, block) -> None:
    grid = TileGrid(shape, tile, overlap, edge)
    eager = [Window(s, grid.tile_shape) for s in itertools.product(*grid.starts)]
    assert list(grid.windows) == eager and len(grid.windows) == len(eager) == len(grid)
    assert grid.windows[-1] == eager[-1] and grid.windows[1:3] == eager[1:3]
    blocks = tuple(1 if len(shape) == 3 and a == grid.slice_axis else block for a in range(len(shape)))
    brute = np.zeros(tuple(-(-n // b) for n, b in zip(shape, blocks)), np.int32)
    for w in eager:
        inside = clip(w, shape)
        brute[tuple(slice(a // b, (e - 1) // b + 1) for a, e, b in zip(inside.start, inside.stop, blocks))] += 1
    np.testing.assert_array_equal(grid.tiles_per_block(blocks), brute)


def test_a_huge_plan_is_not_materialised() -> None:
    grid = TileGrid((1_000_000, 1_000_000), 512, 0.25)
    assert len(grid) > 6_000_000
    assert grid.windows[len(grid) - 1].stop == (1_000_000, 1_000_000)
    assert grid.tiles_per_block((256, 256)).shape == (3907, 3907)
