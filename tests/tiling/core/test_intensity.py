"""Intensity windows: presets, parsing, and the mapping onto [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tiling.core.intensity import CtWindow, ct_window, window_bounds
from tiling.errors import ConfigError


def test_ct_window_maps_low_high_to_0_1() -> None:
    hu = np.array([-1000, -160, 40, 240, 3000], np.int16)
    np.testing.assert_allclose(ct_window(hu, "-160,240"), [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(ct_window(hu, "soft-tissue"), ct_window(hu, (-160, 240)))
    assert ct_window(hu, CtWindow.LUNG).dtype == np.float32
    assert window_bounds("lung") == (-1350.0, 150.0)
    assert window_bounds("brain") == (0.0, 80.0)
    assert window_bounds("bone") == (-500.0, 1300.0)


@pytest.mark.parametrize(
    ("bad", "hint"), [("lungs", "did you mean 'lung'"), ("240,-160", "must exceed"), ("a,b", "low,high")]
)
def test_ct_window_errors_name_the_fix(bad: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=hint):
        ct_window(np.zeros(3), bad)


@given(st.lists(st.floats(-3000, 3000), min_size=2, max_size=20), st.sampled_from(list(CtWindow)))
def test_ct_window_is_monotone_and_bounded(values: list[float], preset: CtWindow) -> None:
    hu = np.sort(np.asarray(values, np.float32))
    out = ct_window(hu, preset)
    assert out.min() >= 0 and out.max() <= 1
    assert (np.diff(out) >= 0).all()
