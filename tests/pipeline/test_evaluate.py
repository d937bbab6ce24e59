"""``tilewise evaluate``: what it writes (--json, --mask) is refused before any work when it would replace an
input, has no folder, or is a file tilewise did not write; its scores carry tilewise's mark."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from models import build_model
from models.train import ExportInfo, export_model
from pipeline.cli import cli
from tests.conftest import digest, write_scene


@pytest.fixture
def scene(tmp_path: Path) -> dict[str, Path]:
    """A 64x64 scene, its labels and an exported (untrained) MobileNetV3 DeepLabV3 for it."""
    rng = np.random.default_rng(0)
    image = write_scene(tmp_path / "img.tif", rng.integers(1, 255, (3, 64, 64), dtype=np.uint8))
    labels = write_scene(tmp_path / "lbl.tif", rng.integers(0, 2, (1, 64, 64), dtype=np.uint8))
    info = ExportInfo(backbone="mobilenet_v3_large", classes=2, class_names=("ground", "road"), in_channels=3,
                      mean=(128.0,) * 3, std=(64.0,) * 3, tile=64)  # fmt: skip
    weights = export_model(tmp_path / "model.pt", build_model("mobilenet_v3_large", 2, 3), info)
    return {"image": image, "labels": labels, "weights": weights}


def evaluate(scene: dict[str, Path], *extra: object):
    args = ["evaluate", scene["image"], scene["labels"], "--weights", scene["weights"], "--tile", "64",
            "--precision", "fp32", "--num-cpus", "2", "--no-progress", *extra]  # fmt: skip
    return CliRunner().invoke(cli, [str(a) for a in args])


def refused(result) -> str:
    """The one ``Error:`` line of a run that stopped before inference (no score printed)."""
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: ") and "mIoU" not in result.output, result.output
    return line


@pytest.mark.parametrize("flag", ["--json", "--mask"])
@pytest.mark.parametrize("role", ["image", "labels", "weights"])
def test_an_output_that_is_an_input_is_refused_and_the_input_kept(scene, flag, role) -> None:
    before = digest(scene[role])
    line = refused(evaluate(scene, flag, scene[role]))
    assert f"{scene[role]}: {flag} is the {role} this run reads" in line
    assert digest(scene[role]) == before


def test_a_json_path_without_its_folder_is_refused_before_inference(scene, tmp_path) -> None:
    line = refused(evaluate(scene, "--json", tmp_path / "nodir" / "s.json"))
    assert "s.json: cannot write output, folder" in line and "nodir does not exist" in line


def test_a_json_file_tilewise_did_not_write_is_kept(scene, tmp_path) -> None:
    mine = tmp_path / "notes.json"
    mine.write_text('{"my": "notes"}')
    line = refused(evaluate(scene, "--json", mine))
    assert "notes.json: exists and was not written by tilewise, so it is never replaced" in line
    assert json.loads(mine.read_text()) == {"my": "notes"}


def test_json_and_mask_on_one_path_are_refused(scene, tmp_path) -> None:
    line = refused(evaluate(scene, "--json", tmp_path / "out.tif", "--mask", tmp_path / "out.tif"))
    assert "--json and --mask name the same file" in line


def test_the_scores_carry_tilewises_mark_and_replace_only_their_own(ray_session, scene, tmp_path) -> None:
    scores, mask = tmp_path / "scores.json", tmp_path / "mask.tif"
    for _ in range(2):  # the second run replaces the scores and the mask the first one wrote
        result = evaluate(scene, "--json", scores, "--mask", mask)
        assert result.exit_code == 0, result.output
        data = json.loads(scores.read_text())
        assert data["tilewise"].startswith("tilewise ") and 0 <= data["miou"] <= 1 and data["pixels"] == 64 * 64
    assert mask.exists() and not list(tmp_path.glob(".scores.json*"))
