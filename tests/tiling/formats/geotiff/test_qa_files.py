"""The seam QA files of a COG mask: a decimated raster on the mask's grid, published or removed whole."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine

from tiling.core.qa import Disagreement, TilePlan, coverage
from tiling.core.windows import Window
from tiling.formats.geotiff.qa import QaFiles


def test_a_tall_scene_gets_a_decimated_raster_on_the_masks_grid(tmp_path) -> None:
    mask = tmp_path / "m.tif"
    transform = Affine(10, 0, 500_000, 0, -10, 4_000_000)
    plan = TilePlan(64, 0.25, "shift", "mean")
    files = QaFiles(mask, plan, (8200, 96), "EPSG:32633", transform)  # longest side over 4096: step 3
    report = files.write(Disagreement(1000, 10))
    assert [p.name for p in tmp_path.iterdir()] != [] and not (tmp_path / "m.qa.tif").exists()  # temporary names
    assert files.publish() == (tmp_path / "m.qa.tif", tmp_path / "m.qa.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.qa.json", "m.qa.tif"]
    with rasterio.open(tmp_path / "m.qa.tif") as ds:
        assert ds.shape == (2734, 32) and ds.transform == transform @ Affine.scale(3) and ds.crs == "EPSG:32633"
        top = ds.read(window=((0, 100), (0, 32)))
    count, _ = coverage(plan.grid((8200, 96)), "mean", Window((0, 0), (300, 96)))
    cells = count.reshape(100, 3, 32, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(top[0], cells, rtol=1e-6)
    np.testing.assert_allclose(top[1], cells, rtol=1e-6)  # the mean blend weighs every tile 1
    written = json.loads((tmp_path / "m.qa.json").read_text())
    assert written == report and written["coverage"]["step"] == 3
    assert written["disagreement"] == {"overlap_pixels": 1000, "pixels": 10, "share": 0.01}


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # a mask on the bare pixel grid
def test_removed_before_publishing_leaves_nothing(tmp_path) -> None:
    files = QaFiles(tmp_path / "m.tif", TilePlan(32, 0.5, "pad", "gaussian"), (50, 70), None, None)
    files.write(None)
    files.remove()
    assert list(tmp_path.iterdir()) == []
