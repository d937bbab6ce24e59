"""``tilewise evaluate --weights W IMAGE LABELS``: whole-scene accuracy through the inference pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pipeline.cli.common import one_line
from pipeline.cli.options import FLAGS, build_config, config_options

__all__ = ["evaluate"]

#: Inference flags that make sense here; the export fixes classes, names, backbone and bands.
_FLAGS = tuple(
    f
    for f in FLAGS
    if f.name in ("--tile", "--overlap", "--blend", "--batch", "--precision", "--address", "--num-cpus", "--device")
)


@click.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.argument("labels", type=click.Path(path_type=Path))
@click.option(
    "--weights", type=click.Path(path_type=Path, dir_okay=False), required=True, help="A model.pt from tilewise train."
)
@click.option("--mask", type=click.Path(path_type=Path), default=None, help="Keep the predicted mask here.")
@click.option(
    "--json", "json_out", type=click.Path(path_type=Path), default=None, help="Also write the scores as JSON."
)
@click.option("--label-attribute", default=None, help="Vector labels: the attribute holding the class.")
@config_options(_FLAGS)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def evaluate(
    image: Path, labels: Path, weights: Path, mask: Path | None, json_out: Path | None, label_attribute: str | None,
    progress: bool, **values: Any,
) -> None:  # fmt: skip
    """Segment IMAGE with --weights through tiles, blending and stitching, and score it against LABELS.

    Prints per-class IoU, mIoU and pixel accuracy over every labelled pixel
    (nodata and ignored labels do not count).
    """
    from dataclasses import replace

    from models.train import read_export
    from pipeline.errors import USER_ERRORS
    from pipeline.evaluate import check_outputs, evaluate_scene, write_scores
    from pipeline.train.config import DataConfig

    try:
        check_outputs({"--json": json_out, "--mask": mask}, {"image": image, "labels": labels, "weights": weights})
        cfg = build_config(values, _FLAGS)
        data = None
        if label_attribute is not None:
            info = read_export(weights)
            if info is not None:
                data = DataConfig(
                    image=(str(image),), labels=(str(labels),), classes=info.classes, ignore_index=info.ignore_index,
                    label_map=",".join(f"{k}:{v}" for k, v in info.label_map.items()) or None,
                    label_attribute=label_attribute, bands=info.bands,
                )  # fmt: skip
        scores = evaluate_scene(weights, image, labels, replace(cfg), data, mask, progress=progress)
        if json_out is not None:
            write_scores(json_out, scores)
    except USER_ERRORS as e:
        raise click.ClickException(one_line(image, e)) from None
    for name, iou in scores["iou"].items():
        click.echo(f"IoU {name:>12}: {'n/a' if iou is None else f'{iou:.4f}'}")
    click.echo(
        f"mIoU: {scores['miou']:.4f}  pixel accuracy: {scores['pixel_accuracy']:.4f}  ({scores['pixels']} pixels)"
    )
    if scores["mask"]:
        click.echo(f"mask: {scores['mask']}")
    if json_out is not None:
        click.echo(f"scores: {json_out}")
