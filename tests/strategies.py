"""Hypothesis strategies for tile planning and stitching."""

from __future__ import annotations

from hypothesis import strategies as st

sizes = st.integers(min_value=1, max_value=300)
tiles = st.integers(min_value=4, max_value=96)
overlaps = st.floats(min_value=0.0, max_value=0.9, allow_nan=False)
edges = st.sampled_from(["shift", "pad"])
blends = st.sampled_from(["gaussian", "mean", "center"])
blocks = st.integers(min_value=8, max_value=128)


@st.composite
def plans(draw):
    """(shape, tile, stride, edge) with stride <= tile."""
    shape = (draw(sizes), draw(sizes))
    tile = draw(tiles)
    stride = draw(st.integers(min_value=1, max_value=tile))
    return shape, tile, stride, draw(edges)
