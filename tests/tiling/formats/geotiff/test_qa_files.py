"""The seam QA files of a COG mask: a decimated raster on the mask's grid, published or removed whole."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
from affine import Affine

from tiling.core.qa import Disagreement, TilePlan, coverage
from tiling.core.windows import Window
from tiling.formats import get_format
from tiling.formats.geotiff.qa import QaFiles


def test_a_tall_scene_gets_a_decimated_raster_on_the_masks_grid(tmp_path) -> None:
    mask = tmp_path / "m.tif"
    transform = Affine(10, 0, 500_000, 0, -10, 4_000_000)
    plan = TilePlan(64, 0.25, "shift", "mean")
    files = QaFiles(mask, plan, (8200, 96), "EPSG:32633", transform)  # longest side over 4096: step 3
    report = files.write(Disagreement(1000, 10))
    assert [p.name for p in tmp_path.iterdir()] != [] and not (tmp_path / "m.qa.tif").exists()  # temporary names
    assert files.publish() == (tmp_path / "m.qa.tif", tmp_path / "m.qa.json", tmp_path / "m.qa.qml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.qa.json", "m.qa.qml", "m.qa.tif"]
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


def test_the_qa_raster_has_a_qgis_style_in_five_colours_for_0_to_4_tiles(tmp_path) -> None:
    files = QaFiles(tmp_path / "m.tif", TilePlan(32, 0.5, "shift", "mean"), (64, 64), "EPSG:32633",
                    Affine(10, 0, 500_000, 0, -10, 4_000_000))  # fmt: skip
    files.write(None)
    files.publish()
    text = (tmp_path / "m.qa.qml").read_text()
    assert "tilewise" in text  # the mark --overwrite checks
    (renderer,) = ET.fromstring(text).findall("./pipe/rasterrenderer")
    assert (renderer.get("type"), renderer.get("band")) == ("singlebandpseudocolor", "1")
    shader = renderer.find("./rastershader/colorrampshader")
    assert shader.get("colorRampType") == "DISCRETE"
    items = shader.findall("item")
    assert [i.get("value") for i in items] == ["0.5", "1.5", "2.5", "3.5", "inf"]
    assert items[0].get("label") == "no tile" and len({i.get("color") for i in items}) == 5
    assert get_format("geotiff").owns(tmp_path / "m.qa.qml")


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # a mask on the bare pixel grid
def test_removed_before_publishing_leaves_nothing(tmp_path) -> None:
    files = QaFiles(tmp_path / "m.tif", TilePlan(32, 0.5, "pad", "gaussian"), (50, 70), None, None)
    files.write(None)
    files.remove()
    assert list(tmp_path.iterdir()) == []
