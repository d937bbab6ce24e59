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


@pytest.mark.parametrize("channels_last", [False, True])
def test_float32_images_are_not_changed_by_normalising_them(channels_last: bool) -> None:
    """Normalisation runs in place on the tensor; a float32 batch on the CPU must not be that tensor.

    In the pipeline the batch is Ray's block (a retried batch would be normalised twice), and an
    API caller may score the same array again.
    """
    rng = np.random.default_rng(0)
    images = rng.normal(100.0, 20.0, (2, 3, 16, 16)).astype(np.float32)
    valid = np.ones((2, 16, 16), bool)
    valid[0, :4] = False
    before = images.copy()
    p = Predictor(torch.nn.Conv2d(3, 2, 1), Normalization((100.0, 90.0, 80.0), (20.0, 10.0, 5.0)),
                  channels_last=channels_last)  # fmt: skip
    first = p.scores(images, valid)
    np.testing.assert_array_equal(images, before)
    np.testing.assert_array_equal(p.scores(images, valid), first)  # the same input gives the same output


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


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_predictions_match_the_cpu(precision: str) -> None:
    """On a GPU: pinned non-blocking copies, normalisation on the device, autocast; same labels as the CPU."""
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, kernel_size=1)
    x = np.random.default_rng(0).integers(0, 255, (4, 3, 64, 64), dtype=np.uint8)
    norm = Normalization((120.0, 110.0, 100.0), (50.0, 40.0, 30.0))
    cpu = Predictor(model, norm, "fp32", device="cpu")(x)
    gpu = Predictor(model, norm, precision, device="cuda")(x)
    assert np.mean(cpu.argmax(1) == gpu.argmax(1)) > 0.99
    np.testing.assert_allclose(gpu, cpu, atol=2e-2 if precision != "fp32" else 1e-4)


@pytest.mark.gpu
@cuda
def test_auto_precision_on_cuda_is_bf16_where_supported() -> None:
    p = Predictor(torch.nn.Conv2d(3, 2, kernel_size=1), device="cuda", precision="auto")
    assert p.precision.value == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")


def test_compiled_model_gives_the_same_probabilities() -> None:
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 2, kernel_size=1)
    x = np.random.default_rng(1).random((2, 3, 16, 16)).astype(np.float32)
    eager = Predictor(model, precision="fp32", channels_last=False, device="cpu")(x)
    compiled = Predictor(model, precision="fp32", channels_last=False, device="cpu", compile=True)(x)
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-6)


def test_tta_flips_is_the_mean_of_the_flipped_predictions_computed_by_hand() -> None:
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 3, kernel_size=3, padding=1)  # a random 3x3 kernel: not flip-equivariant
    x = np.random.default_rng(1).random((2, 3, 12, 10), dtype=np.float32)
    plain = Predictor(model, channels_last=False)
    by_hand = np.mean(
        [
            plain(x),
            plain(x[..., ::-1].copy())[..., ::-1],  # left-right
            plain(x[..., ::-1, :].copy())[..., ::-1, :],  # up-down
            plain(x[..., ::-1, ::-1].copy())[..., ::-1, ::-1],  # both
        ],
        axis=0,
    )
    assert np.abs(plain(x) - by_hand).max() > 1e-3  # the model does see the flips
    tta = Predictor(model, channels_last=False, tta="flips")(x)
    np.testing.assert_allclose(tta, by_hand, rtol=1e-5, atol=1e-6)
    none = Predictor(model, channels_last=False, tta="none")(x)
    with torch.inference_mode():
        direct = torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()
    np.testing.assert_allclose(none, direct, rtol=1e-5, atol=1e-6)  # --tta none: one plain forward pass


def test_unknown_tta_is_refused() -> None:
    with pytest.raises(ModelError, match="tta: must be one of none, flips"):
        Predictor(linear_model(), tta="rotations")
