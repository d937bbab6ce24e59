"""Loss, metrics, augmentation, checkpoints and the export, without Ray."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from models import ModelError, WeightsError, build_model, pretrained_weights
from models.train import (
    ConfusionMatrix,
    ExportInfo,
    augment,
    build_augmentation,
    export_model,
    get_rng_state,
    load_checkpoint,
    out_of_memory,
    read_export,
    save_checkpoint,
    segmentation_loss,
    set_rng_state,
)


def test_ignored_pixels_never_count_in_the_loss() -> None:
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    target[:, :4] = 255
    changed = logits.clone()
    changed[:, :, :4] += 100 * torch.randn(2, 3, 4, 8)  # only where the label is ignored
    assert segmentation_loss(logits, target) == pytest.approx(float(segmentation_loss(changed, target)))
    kept = torch.nn.functional.cross_entropy(logits[:, :, 4:], target[:, 4:])
    assert float(segmentation_loss(logits, target)) == pytest.approx(float(kept), rel=1e-6)


def test_class_weights_make_a_weighted_mean() -> None:
    logits = torch.randn(1, 2, 4, 4)
    target = torch.randint(0, 2, (1, 4, 4))
    per_pixel = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    w = torch.tensor([1.0, 3.0])
    expect = (per_pixel * w[target]).sum() / w[target].sum()
    assert float(segmentation_loss(logits, target, weight=w)) == pytest.approx(float(expect), rel=1e-6)


def test_a_batch_without_labelled_pixels_gives_zero_not_nan() -> None:
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((1, 4, 4), 255))
    loss.backward()
    assert float(loss.detach()) == 0 and torch.all(logits.grad == 0)


def test_confusion_matrix_metrics_by_hand() -> None:
    m = ConfusionMatrix(3)
    truth = np.array([0, 0, 1, 1, 2, 255])
    pred = np.array([0, 1, 1, 1, 0, 2])
    m.update(pred, truth)
    # class 0: tp 1, fp 1 (the 2 predicted 0), fn 1 -> 1/3; class 1: tp 2, fp 1 -> 2/3; class 2: tp 0 -> 0
    np.testing.assert_allclose(m.iou(), [1 / 3, 2 / 3, 0.0])
    assert m.miou() == pytest.approx(1 / 3)
    assert m.pixel_accuracy() == pytest.approx(3 / 5)  # the ignored pixel does not count
    other = ConfusionMatrix(3)
    other.add(m)
    other.add(m)
    assert other.total == 10 and other.iou() == pytest.approx(m.iou())
    assert np.isnan(ConfusionMatrix(2).miou())


def test_spatial_transforms_move_mask_with_image_photometric_only_image() -> None:
    rng = np.random.default_rng(0)
    # 8x8 blocks of +-3: far from 0 after brightness/contrast, few edges for resampling to blur
    signs = np.sign(rng.normal(size=(2, 4, 4))).repeat(8, 1).repeat(8, 2)
    image = (3 * signs).astype(np.float32)
    mask = (image[0] > 0).astype(np.uint8)  # the mask is a function of the image
    t = build_augmentation("remote-sensing")
    moved = 0
    for seed in range(12):
        x, y = augment(t, image, mask, seed)
        assert x.shape == image.shape and y.shape == mask.shape
        inside = y != 255  # pixels an affine brought in from outside are ignored
        agree = ((x[0] > 0) == (y == 1))[inside].mean()
        assert agree > 0.93  # rotations resample the image bilinearly, the mask nearest: block edges differ
        moved += not np.array_equal(y, mask)
    assert moved >= 6
    # the same seed repeats the same draw (what makes a resumed run exact)
    a, b = augment(t, image, mask, 5), augment(t, image, mask, 5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    photometric = build_augmentation("none", [{"name": "RandomBrightnessContrast", "p": 1.0}])
    x, y = augment(photometric, image, mask, 1)
    assert np.array_equal(y, mask) and not np.allclose(x, image)


def test_unknown_preset_or_transform_is_one_line_error() -> None:
    with pytest.raises(ModelError, match="not one of remote-sensing, ct, none"):
        build_augmentation("satellite")
    with pytest.raises(ModelError, match=r"augment\[0\]: 'Flipp' is not an albumentations transform"):
        build_augmentation("none", [{"name": "Flipp"}])


def test_checkpoint_round_trip_restores_every_state(tmp_path) -> None:
    model = torch.nn.Conv2d(3, 2, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=10)
    model(torch.randn(1, 3, 4, 4)).sum().backward()
    opt.step()
    sched.step()
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    path = save_checkpoint(tmp_path / "c.pt", model, opt, sched, None, 1, [{"epoch": 1}])
    expect = (random.random(), np.random.rand(), torch.rand(1))
    state = load_checkpoint(path)
    set_rng_state(state["rng"])
    assert (random.random(), np.random.rand()) == expect[:2] and torch.equal(torch.rand(1), expect[2])
    assert state["epoch"] == 1 and state["history"] == [{"epoch": 1}]
    assert state["scheduler"]["last_epoch"] == 1 and state["optimizer"]["state"]
    assert not list(tmp_path.glob(".*tmp*"))
    assert isinstance(get_rng_state()["torch"], torch.Tensor)
    with pytest.raises(WeightsError, match="not a tilewise training checkpoint"):
        torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pt")
        load_checkpoint(tmp_path / "bad.pt")


def test_export_carries_what_inference_needs(tmp_path) -> None:
    model = build_model("mobilenet_v3_large", 3, 1)
    info = ExportInfo("mobilenet_v3_large", 3, ("a", "b", "c"), 1, (10.0,), (2.0,), (2,), {"255": 1}, tile=128)
    export_model(tmp_path / "m.pt", model, info)
    assert read_export(tmp_path / "m.pt") == info
    # the weights load like any tilewise checkpoint
    again = build_model("mobilenet_v3_large", 3, 1, tmp_path / "m.pt")
    assert torch.equal(again.state_dict()["classifier.4.weight"], model.state_dict()["classifier.4.weight"])
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    assert read_export(tmp_path / "plain.pt") is None


def test_published_weights_offline_say_where_to_put_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(
        WeightsError, match=r"deeplabv3_resnet50_coco-cd0a2569.pth is not in torch's cache; put .* in .*hub/checkpoints"
    ):
        pretrained_weights("coco", "resnet50", download=False)
    cached = tmp_path / "hub" / "checkpoints" / "resnet101-63fe2227.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert pretrained_weights("imagenet", "resnet101") == cached


def test_out_of_memory_ends_with_the_cards_remedies() -> None:
    try:
        torch.empty(2**62, dtype=torch.uint8)  # a real allocator failure, no mock
    except RuntimeError as e:
        err = out_of_memory(e)
    assert err is not None and "\n" not in str(err)
    assert str(err).endswith("use --precision bf16 or fp16 (AMP), --grad-checkpointing, or a smaller --tile")
    assert "--accumulate" in str(err) and "--batch-size" in str(err)
    assert out_of_memory(ValueError("bad value")) is None
