"""Nothing is lost: outputs that would destroy an input, another scene's mask or a user's file are refused.

Each case runs through the CLI as a user would meet it and asserts one
``Error:`` line, a non-zero exit, no traceback, the inputs unchanged
(checksums) and no stray files. Refusals happen while planning, before Ray.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import rasterio

from tests.conftest import SHARED, digest, write_scene
from tests.support.cli import run as support_run

LANDSAT = SHARED / "zarr" / "rgb_byte_landsat.ome.zarr"
FAST = ("--tile", "64", "--backbone", "resnet50", "--no-progress")


def run(*args: object):
    return support_run(*args)


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def one_error(result, *needles: str) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


def test_out_equal_to_the_input_geotiff_is_refused(tmp_path: Path, scene_factory) -> None:
    src = scene_factory(64, 64)
    before, files = digest(src), listing(tmp_path)
    one_error(run("infer", src, "--out", src, *FAST), str(src), "is the input")
    assert digest(src) == before and listing(tmp_path) == files
    one_error(run("infer", src, "--out", src, "--overwrite", *FAST), "is the input")
    assert digest(src) == before


def test_out_equal_to_the_input_zarr_store_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "image.ome.zarr"
    shutil.copytree(LANDSAT, store)
    before = digest(store)
    one_error(run("infer", store, "--out", store, "--overwrite", *FAST), "is the input")
    assert digest(store) == before and listing(tmp_path) == listing(tmp_path)


def test_out_inside_an_input_store_or_holding_the_input_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "image.ome.zarr"
    shutil.copytree(LANDSAT, store)
    before = digest(store)
    one_error(run("infer", store, "--out", store / "mask.zarr", *FAST), "is inside the input")
    one_error(run("infer", store, "--out", tmp_path, "--format", "ome-zarr", "--overwrite", *FAST), "holds the input")
    assert digest(store) == before


def test_an_existing_folder_is_never_replaced_by_an_ome_zarr_mask(tmp_path: Path, scene_factory) -> None:
    src = scene_factory(64, 64)
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "notes.txt").write_text("years of work")
    before = digest(folder)
    one_error(run("infer", src, "--out", folder, "--format", "ome-zarr", *FAST), "exists", "--overwrite")
    one_error(
        run("infer", src, "--out", folder, "--format", "ome-zarr", "--overwrite", *FAST), "not written by tilewise"
    )
    assert digest(folder) == before


def test_an_existing_file_is_kept_without_overwrite_and_a_foreign_one_even_with_it(
    tmp_path: Path, scene_factory
) -> None:
    src = scene_factory(64, 64)
    out = tmp_path / "m.tif"
    write_scene(out, np.ones((1, 8, 8), np.uint8))  # a GeoTIFF the user made, not a tilewise mask
    before = digest(out)
    one_error(run("infer", src, "--out", out, *FAST), "m.tif: exists; pass --overwrite to replace it")
    one_error(run("infer", src, "--out", out, "--overwrite", *FAST), "not written by tilewise")
    assert digest(out) == before


def test_overwrite_replaces_a_mask_tilewise_wrote(ray_session, tmp_path: Path, scene_factory) -> None:
    src, out = scene_factory(64, 64, seed=1), tmp_path / "m.tif"
    assert run("infer", src, "--out", out, *FAST).exit_code == 0
    first = digest(out)
    one_error(run("infer", src, "--out", out, *FAST), "exists")
    assert digest(out) == first
    other = scene_factory(64, 64, seed=2)
    result = run("infer", other, "--out", out, "--overwrite", *FAST)
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as m:
        assert "TILEWISE" in m.tags()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.tif", "m.qml", "m.json", src.name, other.name])


def test_a_batch_whose_sources_share_a_name_is_refused_before_any_work(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for folder, value in ((a, 1), (b, 2)):
        write_scene(folder / "scene.tif", np.full((3, 32, 32), value, np.uint8))
    out = tmp_path / "masks"
    out.mkdir()
    one_error(run("infer", a / "scene.tif", b / "scene.tif", "--out", out, *FAST), "scene_mask.tif", "both")
    assert list(out.iterdir()) == []


def test_a_batch_into_the_input_folder_keeps_the_ground_truth(tmp_path: Path) -> None:
    """``<stem>_mask.tif`` beside the inputs is often the user's ground truth: never replaced."""
    write_scene(tmp_path / "scene.tif", np.full((3, 32, 32), 9, np.uint8))
    write_scene(tmp_path / "other.tif", np.full((3, 32, 32), 7, np.uint8))
    truth = write_scene(tmp_path / "scene_mask.tif", np.ones((1, 32, 32), np.uint8))
    before, files = digest(truth), listing(tmp_path)
    args = ("infer", tmp_path / "scene.tif", tmp_path / "other.tif", "--out", tmp_path, *FAST)
    one_error(run(*args), "scene_mask.tif: exists")
    one_error(run(*args, "--overwrite"), "not written by tilewise")
    assert digest(truth) == before and listing(tmp_path) == files
