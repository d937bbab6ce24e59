"""Predictor: normalisation, masking, precision and output contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import BandCountError, ModelError, Normalization, Predictor, build_model


def linear_model(bands: int = 3, classes: int = 2, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Conv2d(bands, classes, kernel_size=1)


def test_outputs_probabilities_of_shape_bkhw() -> None:
    p = Predictor(linear_model(classes=4))
    out = p(np.random.rand(3, 3, 16, 20).astype(np.float32))
    assert out.shape == (3, 4, 16, 20) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_normalisation_and_invalid_pixels_reach_the_model_as_expected() -> None:
    model = torch.nn.Identity()
    p = Predictor(model, Normalization(mean=(10.0, 20.0), std=(2.0, 4.0)), channels_last=False)
    x = np.stack([np.full((4, 4), 14.0), np.full((4, 4), 12.0)])[None].astype(np.float32)
    valid = np.ones((1, 4, 4), bool)
    valid[0, 0, 0] = False
    t = p.prepare(x, valid)
    assert t[0, 0, 1, 1] == 2.0 and t[0, 1, 1, 1] == -2.0
    assert t[0, :, 0, 0].abs().sum() == 0  # invalid pixels are zero after normalisation


def test_bf16_agrees_with_fp32_on_deeplab() -> None:
    torch.manual_seed(0)
    model = build_model("resnet50", classes=3)
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    fp32 = Predictor(model, precision="fp32")(x)
    bf16 = Predictor(model, precision="bf16")(x)
    assert np.abs(fp32 - bf16).max() < 0.1
    assert (fp32.argmax(1) == bf16.argmax(1)).mean() > 0.9


def test_wrong_band_count_and_fp16_on_cpu_are_refused() -> None:
    p = Predictor(linear_model(bands=3))
    with pytest.raises(BandCountError, match="has 4 band"):
        p(np.zeros((1, 4, 8, 8), np.float32))
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="fp16 autocast needs a CUDA device"):
            Predictor(linear_model(), precision="fp16")
