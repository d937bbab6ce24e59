"""What cannot train is refused in one line before any worker starts: numbers that are no numbers,
YAML values of the wrong type, labels that miss their image, an image without data, oversized label files.

The runs that would start despite a bad input use the smallest settings (MobileNetV3, 32 px tiles,
one epoch), so that on a version without the check they end rather than train for long.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.cli.train import load_train_config
from pipeline.train.config import DataConfig
from pipeline.train.data import open_scenes, plan
from tests.conftest import write_scene
from tiling.core import Window
from tiling.errors import ConfigError, SourceTooLargeError
from tiling.formats import open_labels, open_source

SOLARIS = "geotiff/solaris"
#: Small, quick settings: a run that should have been refused ends soon instead of hanging the suite.
QUICK = ["--backbone", "mobilenet_v3_large", "--tile", "32", "--block", "64", "--epochs", "1", "--batch-size", "2",
         "--samples", "2", "--force", "--augment", "none", "--precision", "fp32"]  # fmt: skip


def fails(args: list[str], match: str | list[str], out: Path) -> str:
    """Run ``tilewise train ARGS`` and return its one ``Error:`` line, which holds every ``match``."""
    result = CliRunner().invoke(cli, ["train", *args, "--out", str(out), "--init", "none", "--no-progress"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for m in [match] if isinstance(match, str) else match:
        assert m in lines[0], lines[0]
    assert not out.exists()  # nothing written, no worker started
    return lines[0]


@pytest.fixture
def scene(tmp_path: Path) -> list[str]:
    rng = np.random.default_rng(0)
    img = write_scene(tmp_path / "img.tif", rng.integers(1, 255, (3, 128, 128), dtype=np.uint8))
    lbl = write_scene(tmp_path / "lbl.tif", rng.integers(0, 2, (1, 128, 128), dtype=np.uint8))
    return ["--image", str(img), "--labels", str(lbl), *QUICK]


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--class-weights", "1,nan"], "class_weights: expected finite non-negative numbers, not all 0"),
        (["--class-weights", "0,0"], "class_weights: expected finite non-negative numbers, not all 0"),
        (["--class-weights", "1,2,3"], "class_weights: 3 weights for 2 classes"),
        (["--lr", "inf"], "lr: must be a finite number, got inf"),
        (["--lr", "nan"], "lr: must be a finite number, got nan"),
        (["--weight-decay", "-1"], "weight_decay: must be >= 0, got -1.0"),
        (["--weight-decay", "nan"], "weight_decay: must be a finite number, got nan"),
        (["--num-cpus", "0"], "num_cpus: must be a positive integer, got 0"),
    ],
)
def test_numbers_that_cannot_train_are_refused(tmp_path: Path, scene: list[str], flags: list[str], match: str) -> None:
    fails([*scene, *flags], match, tmp_path / "out")  # QUICK holds --force: the card is not what refuses them


def test_num_cpus_0_in_the_yaml_file(tmp_path: Path, scene: list[str]) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("num_cpus: 0\n")
    fails([str(cfg), *scene], "num_cpus: must be a positive integer, got 0", tmp_path / "out")


def test_the_readmes_yaml_means_what_its_flags_mean(tmp_path: Path) -> None:
    """YAML 1.1 reads 5e-5 as text and an unquoted 255:1 as the base-60 number 15301: each key goes through
    its flag's own type instead."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "image: [a.tif, b.tif]\nlabels: [a_mask.tif, b_roads.geojson]\nlabel_map: 255:1\n"
        "class_names: [background, road]\ntile: 512\nsplit: block\nlr: 5e-5\nbatch_size: 4\nepochs: 1\n"
        "augment: remote-sensing\nout: runs/roads\nbands: 3,2,1\nuse_gpu: no\nresume: null\nweight-decay: 1E-3\n"
        "augment_custom: [{name: GaussNoise, p: 0.2}]\n"
    )
    c = load_train_config(cfg, {}, set()).validate()
    assert c.optim.lr == 5e-5 and c.data.label_map == "255:1" and c.data.class_names == ("background", "road")
    assert c.data.image == ("a.tif", "b.tif") and c.data.bands == (3, 2, 1) and c.optim.weight_decay == 1e-3
    assert c.run.use_gpu is False and c.run.resume is None and c.run.out == "runs/roads"
    assert c.run.augment_custom == ({"name": "GaussNoise", "p": 0.2},)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("classes: two", "run.yaml: classes: 'two' is not a valid integer"),
        ("lr: [1e-5, 2e-5]", "run.yaml: lr: expected a single value, got a list"),
        ("use_gpu: maybe", "run.yaml: use_gpu: 'maybe' is not a valid boolean"),
        ("bands: 1,x", "run.yaml: bands: expected comma-separated numbers like 1,2,3, got '1,x'"),
        ("split: sideways", "run.yaml: split: 'sideways' is not one of 'block', 'scene'"),
        ("augment_custom: {name: GaussNoise}", "run.yaml: augment_custom: expected a list like"),
    ],
)
def test_a_yaml_value_of_the_wrong_type_is_one_line_naming_its_key(  # keys QUICK does not set as flags
    tmp_path: Path, scene: list[str], line: str, match: str
) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(line + "\n")
    fails([str(cfg), *scene], match, tmp_path / "out")


def _solaris_ids(path: Path) -> str:
    _, _, _, fields = pyogrio.raw.read(path, columns=["id"], read_geometry=False)
    return ",".join(f"{v}:1" for v in sorted(set(fields[0])))


def test_a_geojson_in_projected_coordinates_without_a_crs_member(tmp_path: Path, shared_data: Path) -> None:
    """solaris' sample: 19 buildings in a custom Albers CRS, written without a crs member, so read as WGS 84.
    They reach no pixel of their image; training them gave a background-only model scoring mIoU 1.0."""
    d = shared_data / SOLARIS
    labels = d / "geotiff_custom_proj_labels.geojson"
    args = ["--image", str(d / "sample_geotiff_custom_proj.tif"), "--labels", str(labels), "--label-attribute", "id",
            "--label-map", _solaris_ids(labels), *QUICK]  # fmt: skip
    line = fails(
        args, ["geotiff_custom_proj_labels.geojson: its shapes", "in EPSG:4326", "do not reach"], tmp_path / "o"
    )
    assert "+proj=aea" in line and "a GeoJSON without a crs member is read as WGS 84" in line


@pytest.mark.parametrize(
    ("geometry", "match"),
    [
        ("null", "none of its 2 features has a geometry"),
        ('{"type": "Polygon", "coordinates": [[[10, 10], [10.1, 10], [10.1, 10.1], [10, 10]]]}', "do not reach"),
    ],
)
def test_vector_labels_that_reach_no_pixel(tmp_path: Path, geometry: str, match: str) -> None:
    image = write_scene(tmp_path / "img.tif", np.ones((3, 64, 64), np.uint8))
    feature = f'{{"type": "Feature", "properties": {{"class": 1}}, "geometry": {geometry}}}'
    labels = tmp_path / "labels.geojson"
    labels.write_text(f'{{"type": "FeatureCollection", "features": [{feature}, {feature}]}}')
    with open_source(image) as src, pytest.raises(ConfigError, match=match) as e:
        open_labels(labels, src, attribute="class")
    assert "labels.geojson" in str(e.value) and "\n" not in str(e.value)


def _labels(path: Path, data: np.ndarray, offset: tuple[float, float] = (0, 0), **extra: object) -> Path:
    transform = Affine(10, 0, 500_000 + offset[0], 0, -10, 4_000_000 + offset[1])
    return write_scene(path, data, block=None, transform=transform, **extra)


def test_labels_of_one_class_only_are_refused_naming_both_crs(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    img = write_scene(tmp_path / "img.tif", rng.integers(1, 255, (3, 128, 128), dtype=np.uint8))
    lbl = write_scene(tmp_path / "zeros.tif", np.zeros((1, 128, 128), np.uint8))
    cfg = DataConfig(image=(str(img),), labels=(str(lbl),), tile=32, block=64).validate()
    train, val = open_scenes(cfg)
    with pytest.raises(ConfigError) as e:
        plan(train, val, cfg, seed=0)
    message = str(e.value)
    assert "zeros.tif: classes other than class_0 cover 0.00% of its 16384 labelled pixels" in message
    assert "--min-label-share 0.0001" in message and "labels in EPSG:32633, image" in message
    assert "img.tif in EPSG:32633" in message
    # the share is an option: 0 lets a scene of one class through
    p, _ = plan(train, val, DataConfig(image=(str(img),), labels=(str(lbl),), tile=32, block=64, min_label_share=0), 0)
    assert p.train


def test_min_label_share_is_a_flag_and_a_checked_value(tmp_path: Path, scene: list[str]) -> None:
    fails([*scene, "--min-label-share", "-0.1"], "min_label_share: must be in [0, 1), got -0.1", tmp_path / "o")
    fails([*scene, "--min-label-share", "nan"], "min_label_share: must be a finite number, got nan", tmp_path / "o")


def test_resampled_labels_partly_outside_the_image_are_nodata_there(tmp_path: Path) -> None:
    image = write_scene(tmp_path / "img.tif", np.ones((3, 64, 64), np.uint8))
    # 20 m pixels (another grid), shifted 320 m east: the image's left half lies outside them
    labels = write_scene(tmp_path / "lbl.tif", np.ones((1, 32, 32), np.uint8), block=None,
                         transform=Affine(20, 0, 500_320, 0, -20, 4_000_000))  # fmt: skip
    with open_source(image) as src, open_labels(labels, src, resample=True) as lab:
        data, valid = lab.read(Window((0, 0), (64, 64)))
    assert not valid[:, :32].any(), "pixels the labels do not cover are nodata, not class 0"
    assert valid[:, 32:].all() and (data[0][:, 32:] == 1).all()


def test_resampled_labels_wholly_outside_the_image_are_refused(tmp_path: Path) -> None:
    image = write_scene(tmp_path / "img.tif", np.ones((3, 64, 64), np.uint8))
    labels = write_scene(tmp_path / "far.tif", np.ones((1, 32, 32), np.uint8), block=None,
                         transform=Affine(20, 0, 600_000, 0, -20, 4_000_000))  # fmt: skip
    with open_source(image) as src, pytest.raises(ConfigError, match=r"far\.tif: labels .* do not overlap") as e:
        open_labels(labels, src, resample=True)
    assert "in EPSG:32633" in str(e.value)


def test_an_image_that_is_all_nodata_has_no_training_pixel(tmp_path: Path) -> None:
    img = write_scene(tmp_path / "empty.tif", np.zeros((3, 128, 128), np.uint8), nodata=0)
    lbl = write_scene(tmp_path / "lbl.tif", np.random.default_rng(2).integers(0, 2, (1, 128, 128), dtype=np.uint8))
    fails(
        ["--image", str(img), "--labels", str(lbl), *QUICK], ["the training set is empty", "has data"], tmp_path / "o"
    )


def test_a_label_file_of_one_huge_storage_chunk_is_refused_like_an_image(tmp_path: Path) -> None:
    """A few hundred bytes on disk that claim one 16384 x 16384 uint16 tile (512 MiB, read whole on first use)."""
    image = write_scene(tmp_path / "img.tif", np.ones((3, 64, 64), np.uint8))
    labels = tmp_path / "huge_tile.tif"
    profile = dict(
        driver="GTiff", width=16384, height=16384, count=1, dtype="uint16", crs="EPSG:32633", tiled=True,
        blockxsize=16384, blockysize=16384, sparse_ok=True, transform=Affine(20, 0, 500_000, 0, -20, 4_000_000),
    )  # fmt: skip
    with rasterio.open(labels, "w", **profile):
        pass  # no tile is written: the file is its header
    assert labels.stat().st_size < 10_000
    with open_source(image) as src, pytest.raises(SourceTooLargeError, match="huge_tile.tif: one storage chunk is"):
        open_labels(labels, src, resample=True)
