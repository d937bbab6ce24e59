"""``tilewise demo``: generate a sample scene and segment it, with built-in defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pipeline.cli.infer import run_infer
from pipeline.cli.options import config_options

__all__ = ["demo"]


@click.command()
@click.option(
    "--workdir", type=click.Path(path_type=Path), default=Path("tilewise-demo"), show_default=True,
    help="Where the sample scene and mask go.",
)  # fmt: skip
@click.option("--size", type=int, default=1024, show_default=True, help="Side of the generated scene in pixels.")
@config_options()
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def demo(workdir: Path, size: int, progress: bool, **values: Any) -> None:
    """Generate a sample scene and segment it on an embedded Ray, with built-in defaults."""
    from pipeline.demo import make_scene

    scene = make_scene(workdir / "scene.tif", size=size)
    click.echo(f"sample scene: {scene} ({size}x{size}, 3 bands, EPSG:32633)")
    run_infer((scene,), workdir / "mask.tif", values, progress)
    click.echo(f"open {workdir / 'mask.tif'} in QGIS next to {scene}")
