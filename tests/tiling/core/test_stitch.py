"""Seam-free stitching: a per-pixel model gives the same result tiled as whole.

The oracle (MONAI's): with a model that is translation-equivariant per pixel,
every tile's prediction of a pixel equals the whole-image prediction, so any
blend must reproduce the whole-image result; ``center`` exactly, ``gaussian``
and ``mean`` to float tolerance. Nodata and padding must never contribute.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import blends, blocks, edges, overlaps, sizes, tiles
from tiling import LABEL_NODATA, Stitcher, TileGrid, TilingError, Window
from tiling.core.stitch import class_argmax


class ArrayWriter:
    """Collects finished blocks into whole arrays and counts writes per pixel."""

    def __init__(self, shape: tuple[int, int], classes: int) -> None:
        self.labels = np.full(shape, 77, np.uint8)
        self.probs = np.full((classes, *shape), np.nan, np.float32)
        self.writes = np.zeros(shape, int)

    def write(self, window: Window, labels: np.ndarray, probs: np.ndarray | None) -> None:
        sl = window.to_slices()
        self.labels[sl] = labels
        if probs is not None:
            self.probs[(slice(None), *sl)] = probs
        self.writes[sl] += 1


def per_pixel_model(image: np.ndarray) -> np.ndarray:
    """Softmax of two per-pixel linear scores: translation-equivariant per pixel."""
    s = np.stack([image * 3.0 - 1.0, 1.0 - image * 2.0]).astype(np.float32)
    e = np.exp(s - s.max(axis=0))
    return (e / e.sum(axis=0)).astype(np.float32)


def stitch(image, valid, tile, overlap, edge, blend, block, max_open_bytes=1 << 30):
    grid = TileGrid(image.shape, tile, overlap, edge)
    writer = ArrayWriter(image.shape, 2)
    st_ = Stitcher(grid, 2, blend, writer, block=(block, block), keep_probs=True, max_open_bytes=max_open_bytes)
    for i, w in enumerate(grid.windows):
        patch = np.zeros(w.shape, np.float32)
        pvalid = np.zeros(w.shape, bool)
        inside = tuple(slice(0, max(0, min(n, s + t) - s)) for n, s, t in zip(image.shape, w.start, w.shape))
        patch[inside] = image[w.to_slices()]
        pvalid[inside] = valid[w.to_slices()]
        st_.add(i, per_pixel_model(patch) if pvalid.any() else None, pvalid)
    st_.close()
    return writer, st_


@given(sizes, sizes, tiles, overlaps, edges, blends, blocks, st.integers(0, 2**16))
def test_tiled_equals_whole_image(rows, cols, tile, overlap, edge, blend, block, seed) -> None:
    rng = np.random.default_rng(seed)
    image = rng.random((rows, cols), dtype=np.float32)
    valid = np.ones((rows, cols), bool)
    writer, _ = stitch(image, valid, tile, overlap, edge, blend, block)
    whole = per_pixel_model(image)
    assert (writer.writes == 1).all(), "every output pixel is written exactly once"
    labels = whole.argmax(axis=0)
    if blend == "center":
        np.testing.assert_array_equal(writer.probs, whole)
        np.testing.assert_array_equal(writer.labels, labels)
    else:
        np.testing.assert_allclose(writer.probs, whole, rtol=1e-5, atol=1e-6)
        # where the two classes tie to within float tolerance (a pixel at 0.4 here), the blend's
        # rounding may go either way: the labels must agree wherever the whole image decides
        decided = np.abs(whole[1] - whole[0]) > 1e-5
        np.testing.assert_array_equal(writer.labels[decided], labels[decided])
        assert np.isin(writer.labels, (0, 1)).all()


@given(sizes, sizes, tiles, overlaps, blends, st.integers(0, 2**16))
def test_nodata_pixels_get_nodata_and_never_bleed(rows, cols, tile, overlap, blend, seed) -> None:
    rng = np.random.default_rng(seed)
    image = rng.random((rows, cols), dtype=np.float32)
    valid = rng.random((rows, cols)) > 0.3
    if rows > 4:
        valid[: rows // 2] = False  # whole tiles of nodata get skipped
    garbage = image.copy()
    garbage[~valid] = 1e6  # what nodata pixels hold must not matter
    writer, _ = stitch(garbage, valid, tile, overlap, "shift", blend, 32)
    assert ((writer.labels == LABEL_NODATA) == ~valid).all()
    whole = per_pixel_model(image)
    np.testing.assert_allclose(writer.probs[:, valid], whole[:, valid], rtol=1e-5, atol=1e-6)
    assert (writer.probs[:, ~valid] == 0).all()


def test_spilling_to_disk_gives_identical_output() -> None:
    image = np.random.default_rng(1).random((300, 280), dtype=np.float32)
    valid = np.ones(image.shape, bool)
    mem, s_mem = stitch(image, valid, 64, 0.5, "shift", "gaussian", 32)
    disk, s_disk = stitch(image, valid, 64, 0.5, "shift", "gaussian", 32, max_open_bytes=3 * 32 * 32 * 4 * 2)
    assert s_mem.spills == 0 and s_disk.spills > 0
    np.testing.assert_array_equal(mem.probs, disk.probs)
    assert s_disk.peak_open_bytes <= 3 * 32 * 32 * 4 * 3


def test_open_accumulators_stay_one_tile_row_for_row_major_arrival() -> None:
    """Memory does not grow with the scene's height: blocks finish as tiles pass."""
    peaks = []
    for rows in (256, 1024):
        _, s = stitch(np.zeros((rows, 256), np.float32), np.ones((rows, 256), bool), 64, 0.25, "shift", "mean", 32)
        peaks.append(s.peak_open_bytes)
    assert peaks[0] == peaks[1]


def test_missing_or_duplicate_tiles_are_errors() -> None:
    grid = TileGrid((64, 64), 32, 0.0)
    st_ = Stitcher(grid, 2, "mean", ArrayWriter((64, 64), 2), block=(32, 32))
    st_.add(0, np.zeros((2, 32, 32), np.float32))
    with pytest.raises(TilingError, match="added twice"):
        st_.add(0, np.zeros((2, 32, 32), np.float32))
    with pytest.raises(TilingError, match="shape"):
        st_.add(1, np.zeros((3, 32, 32), np.float32))
    with pytest.raises(TilingError, match="never arrived"):
        st_.close()


@given(st.sampled_from([1, 2, 3, 4, 6, 17, 255]), st.integers(1, 40), st.integers(0, 3), st.integers(0, 10_000))
def test_class_argmax_equals_argmax_with_ties(classes: int, size: int, levels: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # few distinct levels make ties common: argmax keeps the lowest class, and so must we
    scores = rng.integers(0, levels + 1, (classes, size, size)).astype(np.float32)
    labels = class_argmax(scores)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, scores.argmax(axis=0))
