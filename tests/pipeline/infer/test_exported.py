"""Inference and evaluation with a model ``tilewise train`` exported: its metadata, not per-scene guesses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from models import Normalization, build_model
from models.train import ConfusionMatrix, ExportInfo, export_model
from pipeline.cli import cli
from pipeline.config import ModelConfig, PipelineConfig
from pipeline.infer.exported import apply_export
from tests.conftest import write_scene


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-band, 3-class MobileNetV3 DeepLabV3 export that reads band 2 of a scene."""
    path = tmp_path_factory.mktemp("export") / "model.pt"
    info = ExportInfo("mobilenet_v3_large", 3, ("soil", "water", "crops"), 1, (100.0,), (20.0,), bands=(2,), tile=64)
    return export_model(path, build_model("mobilenet_v3_large", 3, 1), info)


def test_apply_export_takes_classes_bands_backbone_and_training_normalisation(exported: Path) -> None:
    cfg, norm = apply_export(PipelineConfig(model=ModelConfig(weights=str(exported))).validate())
    assert cfg.model.classes == 3 and cfg.model.class_names == ("soil", "water", "crops")
    assert str(cfg.model.backbone) == "mobilenet_v3_large" and cfg.input.bands == (2,)
    assert norm == Normalization((100.0,), (20.0,))
    plain = exported.with_name("plain.pt")
    import torch

    torch.save(build_model("resnet50", 2, 3).state_dict(), plain)
    same = PipelineConfig(model=ModelConfig(weights=str(plain))).validate()
    assert apply_export(same) == (same, None)


def test_infer_with_only_weights_and_evaluate(ray_session, exported: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    scene = write_scene(tmp_path / "s.tif", rng.integers(1, 255, (3, 96, 80), dtype=np.uint8))
    labels = write_scene(tmp_path / "l.tif", rng.integers(0, 3, (1, 96, 80), dtype=np.uint8))
    runner = CliRunner()
    r = runner.invoke(cli, ["infer", str(scene), "--out", str(tmp_path / "m.tif"), "--weights", str(exported), "--tile", "64", "--no-progress"])  # fmt: skip
    assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert json.loads(ds.tags()["CLASS_NAMES"]) == ["soil", "water", "crops"]
        assert ds.read(1).max() <= 2
    r = runner.invoke(
        cli,
        ["evaluate", str(scene), str(labels), "--weights", str(exported), "--tile", "64", "--mask", str(tmp_path / "e.tif"),
         "--json", str(tmp_path / "e.json"), "--no-progress"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    scores = json.loads((tmp_path / "e.json").read_text())
    with rasterio.open(tmp_path / "e.tif") as m, rasterio.open(labels) as lab:
        expect = ConfusionMatrix(3)
        expect.update(m.read(1), lab.read(1))
    assert scores["confusion"] == expect.matrix.tolist() and scores["pixels"] == 96 * 80
    assert scores["miou"] == pytest.approx(expect.miou(), abs=1e-6)
    assert f"mIoU: {expect.miou():.4f}" in r.output
