"""``tilewise compare CONFIG.yaml``: ResNet-50 vs ResNet-101 on the user's data, measured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pipeline.cli.options import config_options
from pipeline.cli.train import TRAIN_FLAGS, TRAIN_SECTIONS, load_train_config

__all__ = ["compare"]

_FLAGS = tuple(f for f in TRAIN_FLAGS if f.name not in ("--backbone", "--resume", "--stop-after"))


@click.command()
@click.argument("config", type=click.Path(path_type=Path, dir_okay=False), required=False)
@config_options(_FLAGS, TRAIN_SECTIONS)
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
def compare(config: Path | None, progress: bool, **values: Any) -> None:
    """Fine-tune DeepLabV3-ResNet50 and -ResNet101 with the same CONFIG and flags (as tilewise train),
    and print parameters, GFLOPs at 520², training step time, inference MP/s, validation mIoU and
    pixel accuracy; the table is also written to OUT/compare.md.
    """
    from pipeline.compare import compare as run_compare
    from pipeline.compare import to_markdown
    from pipeline.errors import USER_ERRORS

    ctx = click.get_current_context()
    explicit = {d for d in values if ctx.get_parameter_source(d) in (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)}  # fmt: skip
    try:
        cfg = load_train_config(config, values, explicit)
        rows = run_compare(cfg, cfg.run.out, progress=progress)
    except USER_ERRORS as e:
        raise click.ClickException(" ".join(str(e).split())) from None
    table = to_markdown(rows)
    click.echo(table)
    path = Path(cfg.run.out) / "compare.md"
    path.write_text(table)
    click.echo(f"written: {path}")
