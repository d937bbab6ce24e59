"""``tilewise demo``: the whole mission on a generated scene, in a few minutes on a laptop CPU."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["demo"]


@click.command()
@click.option(
    "--workdir", type=click.Path(path_type=Path), default=Path("tilewise-demo"), show_default=True,
    help="Where the scene, the run and the mask go.",
)  # fmt: skip
@click.option("--size", type=int, default=768, show_default=True, help="Side of the generated scene in pixels.")
@click.option("--epochs", type=int, default=None, help="Training epochs (default: the demo's choice).")
@click.option("--workers", type=int, default=2, show_default=True, help="DDP workers.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
def demo(workdir: Path, size: int, epochs: int | None, workers: int, progress: bool) -> None:
    """Generate a scene with water, fields, forest and roads; fine-tune DeepLabV3 on part of it with
    DDP on Ray Train; score the held-out region through the inference pipeline; segment the whole
    scene; write the mask and a quicklook (scene | mask | truth).
    """
    from pipeline.demo import run_demo
    from pipeline.errors import USER_ERRORS

    try:
        result = run_demo(workdir, size=size, epochs=epochs, workers=workers, progress=progress)
    except USER_ERRORS as e:
        raise click.ClickException(" ".join(str(e).split())) from None
    click.echo(f"scene: {result['scene']} ({size}x{size}, RGB, EPSG:32633); truth: {result['truth']}")
    click.echo(
        f"trained {result['epochs']} epochs on {result['workers']} DDP workers in {result['train_seconds']:.0f} s "
        f"({result['backbone']}, random init, tile {result['tile']}, lr {result['lr']:g})"
    )
    click.echo(
        f"precision: training {result['train_precision']}, inference {result['infer_precision']} "
        "(chosen by --precision auto for this hardware)"
    )
    click.echo(f"validation mIoU: {result['val_miou']:.3f} (training's last epoch, held-out blocks)")
    click.echo(
        f"held-out region through the inference pipeline: mIoU {result['heldout_miou']:.3f}, "
        f"pixel accuracy {result['heldout_accuracy']:.3f}; whole scene mIoU {result['scene_miou']:.3f}"
    )
    click.echo(f"mask: {result['mask']}")
    click.echo(f"quicklook: {result['quicklook']}")
    click.echo(f"model: {result['model']} (tilewise infer SCENE --out MASK --weights {result['model']})")
