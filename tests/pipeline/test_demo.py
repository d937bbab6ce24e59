"""The demo scene: four learnable classes with their own colours, truth on the same grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio

from pipeline.demo import CLASS_NAMES, make_scene, quicklook


def test_demo_scene_classes_differ_in_colour(tmp_path: Path) -> None:
    scene = make_scene(tmp_path / "s.tif", size=256, truth_path=tmp_path / "t.tif")
    with rasterio.open(scene) as s, rasterio.open(tmp_path / "t.tif") as t:
        img, truth = s.read().astype(float), t.read(1)
        assert s.transform == t.transform and s.crs == t.crs and t.nodata == 255
    assert set(np.unique(truth)) == {0, 1, 2, 3, 255}
    assert (img[:, truth == 255] == 0).all()  # the nodata wedge is nodata in both
    means = np.array([img[:, truth == k].mean(axis=1) for k in range(len(CLASS_NAMES))])
    # every pair of classes is apart in mean colour by more than the sensor noise
    gaps = [np.abs(means[a] - means[b]).max() for a in range(4) for b in range(a + 1, 4)]
    assert min(gaps) > 15
    look = quicklook(scene, tmp_path / "t.tif", tmp_path / "t.tif", tmp_path / "q.png", width=600)
    assert look.stat().st_size > 10_000
