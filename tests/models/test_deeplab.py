"""DeepLabV3 construction, band adaptation and local weight loading."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision

from models import (
    BandCountError,
    ModelError,
    WeightsError,
    adapt_first_conv,
    build_model,
    check_weights,
    load_state_dict,
)


@pytest.fixture(scope="module")
def r50_rgb(tmp_path_factory) -> tuple[torch.nn.Module, object]:
    """A ResNet-50 DeepLabV3 with 21 classes, saved as torchvision saves its weights."""
    torch.manual_seed(0)
    model = build_model("resnet50", classes=21, in_channels=3)
    path = tmp_path_factory.mktemp("w") / "deeplab_r50.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_default_is_resnet101_with_k_classes() -> None:
    model = build_model(classes=5)
    assert len(model.backbone.layer3) == 23  # ResNet-101
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 64, 64))["out"]
    assert out.shape == (2, 5, 64, 64)
    assert not model.training


def test_other_band_counts_get_a_new_first_conv() -> None:
    model = build_model("resnet50", classes=2, in_channels=7)
    assert model.backbone.conv1.in_channels == 7
    with torch.no_grad():
        assert model(torch.zeros(2, 7, 64, 64))["out"].shape == (2, 2, 64, 64)


def test_adapt_first_conv_keeps_rgb_filters() -> None:
    w = torch.randn(64, 3, 7, 7)
    five = adapt_first_conv(w, 5)
    assert torch.equal(five[:, :3], w) and not five[:, 3:].any()
    assert torch.allclose(adapt_first_conv(w, 1)[:, 0], w.sum(dim=1))
    # a grey image through the 1-band kernel responds like RGB through the original
    x = torch.rand(1, 1, 16, 16)
    conv = torch.nn.functional.conv2d
    assert torch.allclose(conv(x, adapt_first_conv(w, 1)), conv(x.expand(1, 3, 16, 16), w), atol=1e-4)


def test_loads_checkpoint_and_reinitialises_head_for_new_classes(r50_rgb) -> None:
    ref, path = r50_rgb
    model = build_model("resnet50", classes=4, in_channels=4, weights=path)
    assert torch.equal(model.backbone.conv1.weight[:, :3], ref.backbone.conv1.weight)
    assert torch.equal(model.backbone.layer4[0].conv2.weight, ref.backbone.layer4[0].conv2.weight)
    assert model.classifier[4].out_channels == 4
    same = build_model("resnet50", classes=21, in_channels=3, weights=path)
    assert torch.equal(same.classifier[4].weight, ref.classifier[4].weight)


def test_loads_a_plain_resnet_backbone_checkpoint(tmp_path) -> None:
    resnet = torchvision.models.resnet50()
    path = tmp_path / "resnet50.pth"
    torch.save(resnet.state_dict(), path)
    model = build_model("resnet50", classes=3, weights=path)
    assert torch.equal(model.backbone.layer1[0].conv1.weight, resnet.layer1[0].conv1.weight)


def test_wrapped_ddp_checkpoint_loads(r50_rgb, tmp_path) -> None:
    ref, _ = r50_rgb
    path = tmp_path / "ddp.pt"
    torch.save({"model": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    assert torch.equal(build_model("resnet50", 21, weights=path).classifier[4].weight, ref.classifier[4].weight)


def test_weight_errors_are_clear(r50_rgb, tmp_path) -> None:
    _, path = r50_rgb
    with pytest.raises(WeightsError, match="weights file not found"):
        build_model(weights=tmp_path / "none.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pth: not a loadable torch checkpoint"):
        load_state_dict(junk)
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps(object()))  # weights_only=True refuses arbitrary objects
    with pytest.raises(WeightsError, match="evil.pth"):
        load_state_dict(evil)
    with pytest.raises(WeightsError, match="is it for the other backbone"):
        build_model("resnet101", classes=21, weights=path)
    with pytest.raises(ModelError, match="backbone: 'resnet18' is not one of"):
        build_model("resnet18")


def test_checkpoint_trained_on_other_bands_is_refused(tmp_path) -> None:
    path = tmp_path / "four.pth"
    torch.save(build_model("resnet50", classes=2, in_channels=4).state_dict(), path)
    with pytest.raises(BandCountError, match="trained on 4 input bands, the image has 3"):
        build_model("resnet50", classes=2, in_channels=3, weights=path)


def test_weights_for_every_parameter_are_taken_as_saved(r50_rgb, tmp_path) -> None:
    """No random initialisation first: the model holds the file's tensors, in float32, and runs as the original."""
    ref, path = r50_rgb
    model = build_model("resnet50", classes=21, in_channels=3, weights=path)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    expected = ref.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)["out"], ref.eval()(x)["out"])
    half = tmp_path / "half.pth"  # a checkpoint saved in float16 loads into a float32 model
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in expected.items()}, half)
    w = build_model("resnet50", classes=21, in_channels=3, weights=half).backbone.conv1.weight
    assert w.dtype == torch.float32 and torch.equal(w, ref.backbone.conv1.weight.half().float())
    assert w.requires_grad  # still trainable


def _outcome(fn, *args) -> tuple[type, str] | None:
    try:
        fn(*args)
    except ModelError as e:
        return type(e), str(e)
    return None


def test_check_weights_fails_exactly_where_build_model_does(r50_rgb, tmp_path) -> None:
    """The driver's cheap check (file mapped, model on the meta device) says what building would say, or nothing."""
    _, path = r50_rgb
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    four = tmp_path / "four.pth"
    torch.save(build_model("resnet50", classes=2, in_channels=4).state_dict(), four)
    legacy = tmp_path / "legacy.pth"  # torch's pre-1.6 format cannot be mapped; it is read instead
    torch.save(torch.load(path, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    cases = [
        ("resnet50", 21, 3, path), ("resnet50", 4, 4, path), ("resnet50", 21, 3, legacy), ("resnet50", 2, 4, four),
        ("resnet50", 2, 3, four), ("resnet101", 21, 3, path), ("resnet50", 2, 3, junk),
        ("resnet50", 2, 3, tmp_path / "none.pth"), ("resnet50", 0, 3, path), ("resnet18", 2, 3, path),
    ]  # fmt: skip
    outcomes = [_outcome(check_weights, *case) for case in cases]
    assert outcomes == [_outcome(build_model, *case) for case in cases]
    assert outcomes[:4] == [None] * 4 and all(o is not None for o in outcomes[4:])
