"""Seam QA: the coverage raster against brute force, and the stitcher's disagreement against its definition."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import blends, edges
from tiling.core import BlendMode, TileGrid, Window, clip, tile_weights
from tiling.core.qa import Disagreement, coverage, coverage_blocks, qa_step
from tiling.core.stitch import Stitcher

small_sizes = st.integers(min_value=1, max_value=60)
small_tiles = st.integers(min_value=4, max_value=24)
overlaps = st.sampled_from([0.0, 0.25, 0.5, 0.75])
source_blocks = st.sampled_from([None, (8, 8), (1, 16)])


def brute_force(grid: TileGrid, blend: str) -> tuple[np.ndarray, np.ndarray]:
    """Count and weight by adding every window of the plan, one by one, clipped to the scene."""
    count = np.zeros(grid.shape, np.int64)
    weight = np.zeros(grid.shape, np.float64)
    for i, w in enumerate(grid.windows):
        inside = clip(w, grid.shape)
        core = grid.core(i).relative_to(w) if blend == "center" else None
        count[inside.to_slices()] += 1
        weight[inside.to_slices()] += tile_weights(BlendMode(blend), w.shape, core)[inside.relative_to(w).to_slices()]
    return count, weight


@settings(max_examples=60, deadline=None)
@given(small_sizes, small_sizes, small_tiles, overlaps, edges, blends, source_blocks, st.data())
def test_coverage_equals_brute_force_over_any_window(rows, cols, tile, overlap, edge, blend, block, data) -> None:
    grid = TileGrid((rows, cols), tile, overlap, edge, block)
    count, weight = brute_force(grid, blend)
    r0 = data.draw(st.integers(0, rows - 1))
    c0 = data.draw(st.integers(0, cols - 1))
    window = Window((r0, c0), (data.draw(st.integers(1, rows - r0)), data.draw(st.integers(1, cols - c0))))
    got_count, got_weight = coverage(grid, blend, window)
    np.testing.assert_array_equal(got_count, count[window.to_slices()])
    np.testing.assert_allclose(got_weight, weight[window.to_slices()], rtol=1e-5, atol=1e-6)
    assert got_count.min() >= 1  # every pixel is covered by some tile


@settings(max_examples=40, deadline=None)
@given(small_sizes, small_sizes, small_tiles, overlaps, blends, st.integers(1, 7))
def test_decimated_blocks_are_the_cell_means_of_the_full_raster(rows, cols, tile, overlap, blend, step) -> None:
    grid = TileGrid((rows, cols), tile, overlap)
    count, weight = brute_force(grid, blend)
    out = np.full((-(-rows // step), -(-cols // step)), np.nan)
    out_w = out.copy()
    for window, c, w in coverage_blocks(grid, blend, step):
        out[window.to_slices()] = c
        out_w[window.to_slices()] = w
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            cell = (slice(i * step, (i + 1) * step), slice(j * step, (j + 1) * step))
            assert abs(out[i, j] - count[cell].mean()) < 1e-4
            assert abs(out_w[i, j] - weight[cell].mean()) < 1e-4


def test_qa_step_keeps_the_raster_small() -> None:
    assert qa_step((1000, 1000)) == 1
    assert qa_step((32768, 20000)) == 8


class _Keep:
    def __init__(self, shape: tuple[int, int]) -> None:
        self.labels = np.full(shape, 254, np.uint8)

    def write(self, window: Window, labels: np.ndarray, probs: np.ndarray | None) -> None:
        self.labels[window.to_slices()] = labels


@settings(max_examples=40, deadline=None)
@given(small_sizes, small_sizes, small_tiles, overlaps, blends, st.integers(1, 3), st.data())
def test_disagreement_is_the_share_of_overlap_pixels_whose_tiles_differ(
    rows, cols, tile, overlap, blend, classes, data
) -> None:
    """Each tile predicts one random class per pixel row; some pixels are nodata in some tiles;
    tiles arrive in a random order and the answer is the definition computed pixel by pixel."""
    grid = TileGrid((rows, cols), tile, overlap)
    k = classes + 1
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    votes: list[list[set[int]]] = [[set() for _ in range(cols)] for _ in range(rows)]
    predicted = np.zeros(grid.shape, np.int64)
    tiles = []
    for i, w in enumerate(grid.windows):
        cls = rng.integers(0, k, size=(w.shape[0], 1)) * np.ones(w.shape, np.int64)  # a class per tile row
        valid = rng.random(w.shape) > 0.1
        scores = np.zeros((k, *w.shape), np.float32)
        np.put_along_axis(scores, cls[None], 1.0, axis=0)
        for r in range(w.shape[0]):
            for c in range(w.shape[1]):
                y, x = w.start[0] + r, w.start[1] + c
                if valid[r, c] and 0 <= y < rows and 0 <= x < cols:
                    votes[y][x].add(int(cls[r, c]))
                    predicted[y, x] += 1
        tiles.append((i, scores, valid))
    order = data.draw(st.permutations(range(len(tiles))))
    keep = _Keep((rows, cols))
    cap = data.draw(st.sampled_from([1, 2**20]))  # 1 byte: every block but the newest spills to disk
    stitcher = Stitcher(grid, k, blend, keep, (16, 16), max_open_bytes=cap, qa=True)
    for i in order:
        stitcher.add(*tiles[i])
    stitcher.close()
    overlap_pixels = int((predicted >= 2).sum())
    differ = sum(len(votes[y][x]) > 1 for y in range(rows) for x in range(cols) if predicted[y, x] >= 2)
    assert stitcher.disagreement == Disagreement(overlap_pixels, differ)
    plain = _Keep((rows, cols))
    again = Stitcher(grid, k, blend, plain, (16, 16))
    for i in order:
        again.add(*tiles[i])
    np.testing.assert_array_equal(keep.labels, plain.labels)  # QA does not change the mask


def test_share_and_sum() -> None:
    d = Disagreement(100, 5) + Disagreement(100, 15)
    assert d.share == 0.1 and d.to_dict() == {"overlap_pixels": 200, "pixels": 20, "share": 0.1}
    assert Disagreement().share is None
