"""``tilewise qa`` on hostile or damaged files (issue 19, item 5): the size limits of infer apply to a
mask's header, and a file that cannot be read is one Error line while the other masks still go."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from tests.support.cli import one_error, run
from tiling import GeoRef, Window
from tiling.core.qa import TilePlan
from tiling.formats.geotiff.qa import PLAN_TAG
from tiling.formats.geotiff.writer import CogSink

UTM = GeoRef(crs="EPSG:32633", transform=(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0), nodata=None)
PLAN = TilePlan(32, 0.25, "shift", "gaussian")


def mask(path: Path, shape: tuple[int, int] = (64, 80)) -> Path:
    sink = CogSink(path, shape, UTM, ["bg", "thing"], plan=PLAN)
    sink.write(Window((0, 0), shape), np.ones(shape, np.uint8), None)
    return sink.finalize()[0]


def claiming(path: Path, side: int) -> Path:
    """A GeoTIFF of some kilobytes that claims ``side`` x ``side`` pixels (no block is written), with
    the tags of a tilewise mask."""
    profile = dict(
        driver="GTiff", width=side, height=side, count=1, dtype="uint8", crs="EPSG:32633", tiled=True,
        blockxsize=256, blockysize=256, transform=Affine(10, 0, 500_000, 0, -10, 4_000_000), SPARSE_OK=True,
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as ds:
        ds.update_tags(TILEWISE="tilewise", **{PLAN_TAG: json.dumps(PLAN.to_dict())})
    return path


def test_a_mask_claiming_more_pixels_than_allowed_is_refused_before_any_work(tmp_path) -> None:
    hostile = claiming(tmp_path / "m.tif", 20_000)
    assert hostile.stat().st_size < 100_000  # its block tables; no pixel is stored
    line = one_error(run("qa", hostile, "--max-pixels", "1e6"))
    assert "m.tif: claims 20,000 x 20,000 pixels" in line and "--max-pixels" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif"], "no QA file, no temporary"
    assert "--max-chunk-mb" in run("qa", "--help").output


def test_a_file_qa_cannot_read_is_one_line_and_the_other_masks_still_go(tmp_path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    mask(folder / "a.tif")
    (folder / "b.tif").write_text("not a raster at all")
    mask(folder / "c.tif")
    result = run("qa", folder, tmp_path / "missing.tif")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 2, result.output
    assert "b.tif: cannot be read as a GeoTIFF" in errors[0] and "missing.tif: no such mask" in errors[1]
    for name in ("a", "c"):
        assert f"{folder / name}.tif: " in result.output and (folder / f"{name}.qa.tif").exists()
