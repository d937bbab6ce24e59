"""ResNet-50 against ResNet-101 under DeepLabV3, measured on this machine and the user's data.

The seed's table (42.0M vs 61.0M parameters at 21 classes, 178.72 vs 258.74
GFLOPs at 520², ResNet-101 training about 2x slower) is measured rather than
quoted: parameters are counted, FLOPs counted by ``torch.utils.flop_counter``
on the meta device (no arithmetic runs), step time and inference throughput
timed at the run's tile size, and validation mIoU and pixel accuracy come
from fine-tuning each backbone with the same configuration.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.segmentation import deeplabv3_resnet50, deeplabv3_resnet101

from models import build_model
from models.train import train_step
from pipeline.train import TrainConfig, train

__all__ = ["BACKBONES", "compare", "to_markdown"]

log = logging.getLogger(__name__)

BACKBONES = ("resnet50", "resnet101")
_REFERENCE = {"resnet50": deeplabv3_resnet50, "resnet101": deeplabv3_resnet101}


def _gflops(model: torch.nn.Module, channels: int, size: int = 520) -> float:
    """Multiply-accumulates x 1e-9 of one forward pass at ``size``² (torchvision's "GFLOPS" convention)."""
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, channels, size, size, device="meta"))
    return float(counter.get_total_flops()) / 2e9


def _reference(backbone: str) -> tuple[float, float]:
    """(M parameters, GFLOPs at 520²) of torchvision's published model: 21 classes, with its aux head."""
    with torch.device("meta"):
        model = _REFERENCE[backbone](weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        return params, _gflops(model.eval(), 3)


def _timings(
    backbone: str, classes: int, channels: int, tile: int, batch: int, repeats: int = 3
) -> tuple[float, float]:
    """(seconds per training step of ``batch`` tiles, inference megapixels per second), fp32 on the CPU."""
    torch.manual_seed(0)
    model = build_model(backbone, classes, channels).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    x = torch.randn(batch, channels, tile, tile)
    y = torch.randint(0, classes, (batch, tile, tile))
    train_step(model, x, y, opt)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        train_step(model, x, y, opt)
    step = (time.perf_counter() - t0) / repeats
    model.eval()
    with torch.inference_mode():
        model(x)
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(x)
    mps = batch * tile * tile * repeats / (time.perf_counter() - t0) / 1e6
    return step, mps


def compare(config: TrainConfig, out: str | Path, progress: bool = True) -> list[dict[str, Any]]:
    """Measure both backbones; each is fine-tuned with ``config`` into ``out/<backbone>``.

    Returns:
        One row per backbone (plain data, see :func:`to_markdown`).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for backbone in BACKBONES:
        cfg = replace(config, model=replace(config.model, backbone=backbone), run=replace(config.run, out=str(out / backbone)))  # fmt: skip
        result = train(cfg, progress=progress)
        channels = _channels(result.model)
        classes = cfg.data.classes
        with torch.device("meta"):
            model = build_model(backbone, classes, channels)
            params = sum(p.numel() for p in model.parameters()) / 1e6
        gflops = _gflops(model, channels)
        ref_params, ref_gflops = _reference(backbone)
        step, mps = _timings(backbone, classes, channels, cfg.data.tile, cfg.optim.batch_size)
        last = result.history[-1]
        rows.append({
            "backbone": backbone, "params_m": params, "gflops_520": gflops, "ref_params_m": ref_params,
            "ref_gflops_520": ref_gflops, "step_s": step, "infer_mps": mps, "val_miou": last["miou"],
            "pixel_accuracy": last["pixel_accuracy"], "val_loss": last["val_loss"], "tile": cfg.data.tile,
            "batch": cfg.optim.batch_size, "classes": classes,
        })  # fmt: skip
    return rows


def _channels(model_path: Path) -> int:
    from models.train import read_export

    info = read_export(model_path)
    return info.in_channels if info is not None else 3


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table, with the ResNet-101/ResNet-50 ratios."""
    head = (
        "| backbone | params (M), K classes | GFLOPs at 520² | torchvision reference (21 classes + aux head): params, GFLOPs "
        "| train step (s) | inference (MP/s) | val mIoU | pixel accuracy |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    lines = [
        f"| {r['backbone']} | {r['params_m']:.1f} | {r['gflops_520']:.2f} | {r['ref_params_m']:.1f}M, {r['ref_gflops_520']:.2f} "
        f"| {r['step_s']:.2f} | {r['infer_mps']:.3f} | {_f(r['val_miou'])} | {_f(r['pixel_accuracy'])} |"
        for r in rows
    ]
    a, b = rows[0], rows[1]
    ratio = (
        f"\nResNet-101 / ResNet-50: parameters x{b['params_m'] / a['params_m']:.2f}, FLOPs x{b['gflops_520'] / a['gflops_520']:.2f}, "
        f"train step x{b['step_s'] / a['step_s']:.2f}, inference throughput x{b['infer_mps'] / a['infer_mps']:.2f} "
        f"(tile {a['tile']}, batch {a['batch']}, fp32 on this machine's CPU).\n"
    )
    return head + "\n".join(lines) + "\n" + ratio


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
