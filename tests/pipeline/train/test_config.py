"""Bad configuration ends in one line, exit 1, before any worker starts; the split never leaks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.cli.train import TRAIN_FLAGS, load_train_config
from pipeline.train.config import DataConfig
from pipeline.train.data import TileRef, check_no_leak, epoch_rows, open_scenes, plan
from tests.conftest import write_scene
from tiling.errors import ConfigError

VEGAS = "segmentation/spacenet_vegas_roads"
ATLANTA = "segmentation/spacenet_atlanta_buildings"


def assert_fails(args: list[str], match: str, out: Path) -> None:
    result = CliRunner().invoke(cli, ["train", *args, "--out", str(out), "--init", "none", "--no-progress"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert match in lines[0], lines[0]
    assert not out.exists()  # nothing written, no worker started


@pytest.fixture
def vegas(shared_data: Path) -> list[str]:
    d = shared_data / VEGAS
    return [
        "--image",
        str(d / "road_mask_input.tif"),
        "--labels",
        str(d / "sample_road_raster_mask.tif"),
        "--tile",
        "256",
    ]


def test_unknown_key_in_the_yaml_file(tmp_path: Path, vegas: list[str]) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("lrr: 0.0001\nepochs: 2\n")
    assert_fails([str(cfg), *vegas], "run.yaml: unknown key 'lrr'; did you mean 'lr'?", tmp_path / "out")


def test_learning_rate_outside_the_card(tmp_path: Path, vegas: list[str]) -> None:
    assert_fails(
        [*vegas, "--lr", "0.001"],
        "lr: 0.001 is outside the fine-tuning card's range 1e-05..0.0001; pass --force",
        tmp_path / "o",
    )


def test_batch_size_outside_the_card(tmp_path: Path, vegas: list[str]) -> None:
    assert_fails(
        [*vegas, "--batch-size", "64"], "batch_size: 64 is outside the fine-tuning card's range 2..32", tmp_path / "o"
    )


def test_label_values_outside_the_classes(tmp_path: Path, vegas: list[str]) -> None:
    # SpaceNet marks roads with 255: without --label-map 255:1 they are no class (and not silently ignored)
    assert_fails(vegas, "label value 255 is not a class (classes are 0 to 1, 255 is ignored); map it with --label-map 255:CLASS or 255:ignore", tmp_path / "o")  # fmt: skip
    assert_fails([*vegas, "--classes", "3", "--label-map", "255:2,0:3"], "label_map: 0:3 maps to no class; classes are 0 to 2", tmp_path / "o")  # fmt: skip


def test_labels_on_another_grid_without_resample(tmp_path: Path, shared_data: Path) -> None:
    with rasterio.open(shared_data / VEGAS / "sample_road_raster_mask.tif") as ds:
        coarse = write_scene(
            tmp_path / "coarse.tif", (ds.read(1)[::2, ::2] > 0).astype(np.uint8)[None], crs=ds.crs.to_string(),
            block=None, transform=ds.transform @ Affine.scale(2),
        )  # fmt: skip
    args = ["--image", str(shared_data / VEGAS / "road_mask_input.tif"), "--labels", str(coarse)]
    assert_fails(args, "labels are on another grid", tmp_path / "o")


def test_vector_labels_without_the_class_attribute(tmp_path: Path, shared_data: Path) -> None:
    d = shared_data / ATLANTA
    args = ["--image", str(d / "sample_geotiff.tif"), "--labels", str(d / "geotiff_labels.geojson"), "--tile", "256"]
    assert_fails(args, "geotiff_labels.geojson: names no class attribute; its attributes are", tmp_path / "o")
    assert_fails([*args, "--label-attribute", "klass"], "has no attribute 'klass'", tmp_path / "o")


def test_empty_training_set(tmp_path: Path, vegas: list[str]) -> None:
    assert_fails([*vegas, "--label-map", "0:ignore,255:ignore"], "the training set is empty", tmp_path / "o")


def test_validation_split_that_would_overlap_training_tiles(tmp_path: Path, vegas: list[str]) -> None:
    assert_fails([*vegas, "--block", "128"], "block: 128 px is smaller than the tile (256 px)", tmp_path / "o")
    image = vegas[1]
    assert_fails([*vegas, "--val-image", image, "--val-labels", vegas[3], "--split", "scene", "--label-map", "255:1"],
           "is also a training scene, so validation pixels would be in training tiles", tmp_path / "o")  # fmt: skip


def test_yaml_keys_are_flags_and_flags_win(tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("image: [a.tif, b.tif]\nlabels: [a_l.tif, b_l.tif]\nlr: 2e-5\nbatch-size: 8\nlabel_map: '255:1'\n")
    values = {f.dest: None for f in TRAIN_FLAGS}
    values["optim__lr"] = 3e-5
    c = load_train_config(cfg, values, {"optim__lr"})
    assert c.data.image == ("a.tif", "b.tif") and c.data.label_map == "255:1"
    assert c.optim.lr == 3e-5 and c.optim.batch_size == 8 and c.optim.epochs == 1  # flag, file, default
    assert {f.name.lstrip("-").replace("-", "_") for f in TRAIN_FLAGS} == set(c.to_flat())  # every key is a flag


def _canvas(tiles: list[TileRef], shape: tuple[int, int], tile: int) -> np.ndarray:
    out = np.zeros(shape, bool)
    for t in tiles:
        out[t.start[0] : t.start[0] + tile, t.start[1] : t.start[1] + tile] = True
    return out


def test_no_validation_pixel_is_in_a_training_tile(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = write_scene(tmp_path / "i.tif", rng.integers(1, 255, (3, 100, 120), dtype=np.uint8))
    lab = write_scene(tmp_path / "l.tif", rng.integers(0, 2, (1, 100, 120), dtype=np.uint8))
    cfg = DataConfig(image=(str(img),), labels=(str(lab),), tile=16, block=40, val_fraction=0.3, windows="random", samples=200).validate()  # fmt: skip
    train, val = open_scenes(cfg)
    p, scenes = plan(train, val, cfg, seed=4)
    assert p.train and p.val
    val_px = _canvas(p.val, (100, 120), 16)
    assert not (val_px & _canvas(p.train, (100, 120), 16)).any()
    for epoch in range(3):  # random windows stay inside training blocks too
        rows = epoch_rows(p, scenes, cfg, epoch, 4, 1)
        drawn = _canvas([TileRef(0, tuple(r["start"])) for r in rows], (100, 120), 16)
        assert not (val_px & drawn).any()
    with pytest.raises(ConfigError, match="overlaps training tile"):
        check_no_leak([TileRef(0, (0, 0))], [TileRef(0, (8, 15))], 16)
    check_no_leak([TileRef(0, (0, 0))], [TileRef(0, (16, 0)), TileRef(1, (0, 0))], 16)
