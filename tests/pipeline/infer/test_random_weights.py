"""No silent random model: a run names its weights, or asks for an untrained network by its seed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipeline.batch.state import model_fingerprint
from pipeline.config import InferenceConfig, ModelConfig, PipelineConfig, TilingConfig
from pipeline.infer import infer_scene
from tests.conftest import write_scene
from tests.support.cli import one_error
from tiling.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def untrained(seed: int | None) -> PipelineConfig:
    return PipelineConfig(
        TilingConfig(tile=64), ModelConfig(backbone="mobilenet_v3_large", classes=3, random_weights=seed),
        InferenceConfig(batch=4),
    )  # fmt: skip


def test_infer_without_weights_is_one_line_saying_what_to_pass(tmp_path, scene_factory) -> None:
    from click.testing import CliRunner

    from pipeline.cli import cli

    src, out = scene_factory(64, 64), tmp_path / "m.tif"
    result = CliRunner().invoke(cli, ["infer", str(src), "--out", str(out), "--no-progress"])
    line = one_error(result)
    assert "--weights" in line and "--random-weights SEED" in line
    assert not out.exists()


def test_the_python_api_refuses_a_model_nobody_asked_for(tmp_path, scene_factory) -> None:
    with pytest.raises(ConfigError, match="no model weights"):
        infer_scene(scene_factory(64, 64), tmp_path / "m.tif", untrained(None), progress=False)


def test_weights_and_a_random_seed_exclude_each_other(tmp_path) -> None:
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"x")
    with pytest.raises(ConfigError, match="not both"):
        ModelConfig(weights=str(weights), random_weights=1).validate()


def test_a_seeded_random_model_gives_the_same_mask_twice(ray_session, tmp_path) -> None:
    data = np.random.default_rng(4).integers(1, 255, (3, 128, 128), np.uint8)
    src = write_scene(tmp_path / "s.tif", data)
    masks = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        infer_scene(src, tmp_path / f"{name}.tif", untrained(seed), progress=False)
        with rasterio.open(tmp_path / f"{name}.tif") as ds:
            masks[name] = ds.read(1)
    np.testing.assert_array_equal(masks["a"], masks["b"])
    assert (masks["a"] != masks["c"]).any(), "another seed is another network"


def _state_digest(seed: int) -> str:
    """SHA-256 of an untrained DeepLabV3's weights, built in a fresh process (as each model actor does)."""
    script = (
        "import hashlib, sys; from models import build_model; "
        f"m = build_model('mobilenet_v3_large', 3, 4, seed={seed}); h = hashlib.sha256(); "
        "[h.update(t.numpy().tobytes()) for _, t in sorted(m.state_dict().items())]; print(h.hexdigest())"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_every_process_builds_the_same_network_from_a_seed() -> None:
    """What makes a batch killed mid-scene resume with the network it started with."""
    first, second, other = _state_digest(3), _state_digest(3), _state_digest(4)
    assert first == second and first != other


def test_a_batch_records_the_seed_as_the_model() -> None:
    a, b = untrained(1).validate(), untrained(2).validate()
    assert model_fingerprint(a) != model_fingerprint(b), "another seed is another model: never resumed into"
    assert model_fingerprint(a) == model_fingerprint(untrained(1).validate())
