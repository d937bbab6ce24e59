"""The model actor's UDF on its own (no Ray needed: Ray Data calls it with numpy batches)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import ModelError
from pipeline.config import ModelConfig
from pipeline.infer.predict import PredictUDF
from tests.support.models import Slow, pointwise


def batch(n: int, skip: list[bool]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "scene": np.zeros(n, np.int32),
        "index": np.arange(n, dtype=np.int64),
        "image": rng.integers(0, 255, (n, 3, 8, 8)).astype(np.uint8),
        "valid": np.ones((n, 8, 8), bool),
        "skip": np.array(skip, bool),
        "mean": np.full((n, 3), 100.0, np.float32),
        "std": np.full((n, 3), 50.0, np.float32),
        "error": np.full(n, "", dtype=object),
        "internal": np.zeros(n, bool),
    }


def udf(model_classes: int, configured: int) -> PredictUDF:
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, model_classes, 1)
    return PredictUDF(model, ModelConfig(classes=configured, precision="fp32"), bands=3, device="cpu", threads=1)


def test_skipped_tiles_get_zeros_and_the_others_the_same_scores_as_a_full_batch() -> None:
    u = udf(2, 2)
    full = u(batch(3, [False, False, False]))["scores"]
    mixed = u(batch(3, [False, True, False]))["scores"]
    assert full.shape == (3, 2, 8, 8)
    np.testing.assert_array_equal(mixed[1], 0.0)
    np.testing.assert_allclose(mixed[[0, 2]], full[[0, 2]], rtol=1e-6)
    assert u(batch(0, []))["scores"].shape == (0, 2, 8, 8)  # an empty batch does not run the model


def test_a_model_with_another_number_of_classes_is_one_line() -> None:
    with pytest.raises(ModelError, match="returned 3 class scores; 2 classes"):
        udf(3, 2)(batch(2, [False, False]))


def test_each_row_carries_its_share_of_the_model_time() -> None:
    u = PredictUDF(Slow(pointwise(), 0.2), ModelConfig(classes=2, precision="fp32"), bands=3, device="cpu", threads=1)
    seconds = u(batch(4, [False, True, False, False]))["model_seconds"]
    assert seconds.shape == (4,) and np.all(seconds == seconds[0])  # equal shares
    assert 0.2 <= seconds.sum() < 2.0
    assert u(batch(2, [True, True]))["model_seconds"].sum() < 0.2  # nothing ran
