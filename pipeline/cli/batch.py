"""``tilewise batch``: segment an archive (a folder, a glob, a manifest) incrementally, through one model pool."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from pipeline.cli.options import build_config, config_options
from pipeline.config import PipelineConfig

__all__ = ["batch"]

#: Products are made by ``tilewise infer``; a batch refuses their flags rather than ignore them.
_PRODUCT_FLAGS = {"products__vector": "--vector", "products__quicklook": "--quicklook"}


@click.command()
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--out", "-o", required=True,
    help="Folder (or s3:// URL) for the masks, the state records and the run reports (created if missing).",
)  # fmt: skip
@click.option(
    "--retries", type=click.IntRange(min=0), default=1, show_default=True,
    help="Try a failed scene again this many times in the same run.",
)  # fmt: skip
@config_options()
@click.option("--progress/--no-progress", default=True, help="Show progress bars (scenes and tiles).")
@click.pass_context
def batch(
    ctx: click.Context, /, sources: tuple[str, ...], out: Path, retries: int, progress: bool, **values: Any
) -> None:
    """Segment every scene SOURCES list into OUT, skipping those already done.

    SOURCES are folders (every image file, Zarr store and DICOM series folder
    in them), globs ('archive/**/*.tif', quoted), s3:// URLs (a prefix ending
    in / or a glob lists its images; read through GDAL) or manifests: a CSV with a
    'path' column, or JSON lines like {"path": "a.tif", "bands": [4, 3, 2]};
    other columns are per-scene reader options (bands, series, level,
    window, complex, allow_drivers). Formats may be mixed; each mask is
    OUT/<stem>_mask.<ext> in the source's own format unless --format says.

    A record per scene (OUT/.tilewise/state/) holds the input fingerprint
    (size, modification time and path of its files), the model fingerprint,
    the parameters, the status and timings. A re-run skips scenes whose
    record matches, redoes changed ones and retries failed ones. Each run
    writes a report to OUT/.tilewise/runs/ (JSON and text, also as latest.*).

    Exit status: 0 every scene done, 3 some scenes failed (the report names
    each with its reason), 1 the run itself failed, 4 SOURCES named no
    scene (an empty folder, a glob matching nothing, a manifest without
    rows; tilewise's own outputs are never scenes).
    """
    from pipeline.cli.infer import Terminated, _catch_sigterm
    from pipeline.errors import USER_ERRORS
    from pipeline.ray_env import start_ray

    for dest, flag in _PRODUCT_FLAGS.items():
        if values.get(dest):
            raise click.ClickException(f"{flag}: batch makes masks only; make products with tilewise infer")
    # a program embedding tilewise may hand a model in: CliRunner().invoke(cli, args, obj={"model": m})
    embedded = ctx.find_root().obj or {}
    _catch_sigterm()
    try:
        start_ray(values.get("ray__address"), values.get("ray__num_cpus"))  # starts while scenes are listed
        from pipeline.batch import run_batch  # torch and Ray Data load while Ray starts
        from pipeline.batch.storage import is_url

        cfg: PipelineConfig = build_config(values).validate()
        if not is_url(out):
            Path(out).mkdir(parents=True, exist_ok=True)
        report = run_batch(
            list(sources), out, cfg, retries, model=embedded.get("model"),
            normalization=embedded.get("normalization"), progress=progress,
        )  # fmt: skip
    except USER_ERRORS as e:
        status = getattr(e, "exit_status", 1)  # SOURCES naming no scene has a status of its own
        if status != 1:
            click.echo(f"Error: {' '.join(str(e).split())}", err=True)
            ctx.exit(status)
        raise click.ClickException(" ".join(str(e).split())) from None
    except OSError as e:
        raise click.ClickException(f"{out}: {e.strerror or e}") from None
    except KeyboardInterrupt:
        click.echo("interrupted; finished scenes are recorded, the next run goes on from there", err=True)
        sys.exit(130)
    except Terminated:
        click.echo("terminated; finished scenes are recorded, the next run goes on from there", err=True)
        sys.exit(143)
    click.echo(report.summary())
    click.echo(f"report: {report.files[0]}")
    ctx.exit(report.exit_code)
