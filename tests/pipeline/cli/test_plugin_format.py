"""A format registered from outside tilewise works through the real CLI and Ray, with no change to pipeline/."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from models import Normalization
from pipeline.cli import cli
from pipeline.config import InferenceConfig, ModelConfig, PipelineConfig, TilingConfig
from pipeline.infer import infer_scene
from tests.support import npy_format
from tiling import formats
from tiling.core import LABEL_NODATA


@pytest.fixture
def npy_registered():
    fmt = formats.register(npy_format.LOCATOR)
    yield fmt
    formats.unregister(fmt.name)


def test_toy_npy_format_runs_end_to_end_through_the_cli(ray_session, tmp_path, npy_registered) -> None:
    rng = np.random.default_rng(3)
    src, out = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(src, rng.integers(0, 255, (3, 70, 90), dtype=np.uint8))
    result = CliRunner().invoke(
        cli,
        [
            "infer",
            str(src),
            "--out",
            str(out),
            "--tile",
            "64",
            "--backbone",
            "resnet50",
            "--random-weights",
            "0",
            "--no-progress",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    labels = np.load(out)
    assert labels.shape == (70, 90) and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1}, "two classes, and no pixel left unwritten (255)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy", "y.npy"]


def test_toy_format_output_equals_the_whole_image_prediction(ray_session, tmp_path, npy_registered) -> None:
    """Through Ray the registered reader and writer give the same labels as the model on the whole image."""
    torch.manual_seed(0)
    model = torch.nn.Conv2d(2, 3, kernel_size=1)
    image = np.random.default_rng(4).random((2, 50, 40)).astype(np.float32)
    src, out = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(src, image)
    cfg = PipelineConfig(
        TilingConfig(tile=32, overlap=0.25, blend="center"),
        ModelConfig(classes=3, precision="fp32", channels_last=False),
        InferenceConfig(batch=4),
    )
    norm = Normalization((0.0, 0.0), (1.0, 1.0))
    infer_scene(src, out, cfg, model=model, normalization=norm, progress=False)
    with torch.no_grad():
        expected = model(torch.from_numpy(image)[None])[0].argmax(0).numpy()
    labels = np.load(out)
    assert (labels != LABEL_NODATA).all()
    np.testing.assert_array_equal(labels, expected)
