"""``tilewise infer``: segment one scene, or several into a folder."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click

from pipeline.cli.common import one_line, report, report_products
from pipeline.cli.options import build_config, config_options
from pipeline.config import PipelineConfig
from tiling.formats import output_format, sink_options

__all__ = ["Terminated", "infer", "run_infer"]


class Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C, so every sink aborts and nothing is left half-written."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def _catch_sigterm() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def run_infer(
    sources: tuple[Path, ...], out: Path, values: dict[str, Any], progress: bool, embedded: dict[str, Any] | None = None
) -> None:
    """Segment ``sources`` into ``out`` with the config the flag ``values`` describe, then make the products.

    ``embedded`` is what a program embedding tilewise handed in (``model``,
    ``normalization``), as ``tilewise batch`` takes it.

    User errors end as one ``Error:`` line and exit status 1; in a batch the
    other scenes still finish.
    """
    model = (embedded or {}).get("model")
    norm = (embedded or {}).get("normalization")
    from pipeline.errors import USER_ERRORS
    from pipeline.ray_env import start_ray

    _catch_sigterm()
    try:
        # Ray starts in the background while the sources are opened and checked
        ray_options = {k: values.get(f"ray__{k}") for k in ("address", "num_cpus")}
        start_ray(ray_options["address"], ray_options["num_cpus"])
        # the heavy modules (torch, Ray Data, GDAL's vector drivers) load while Ray starts
        from pipeline.infer import infer_many, infer_scene
        from pipeline.products import check_products, make_products

        cfg: PipelineConfig = build_config(values).validate()
        if model is None:
            cfg.model.require_weights()
        batch = len(sources) > 1
        if batch and not out.is_dir():
            raise click.ClickException(f"{out}: with several sources, --out must be an existing folder")
        if not batch:  # refuse a format option for another format before opening anything
            sink_options(output_format(out, cfg.output_format), cfg.output.sink_options())
        check_products(cfg, _masks(sources, out, cfg, batch), batch)
        if not batch:
            result = infer_scene(sources[0], out, cfg, model=model, normalization=norm, progress=progress)
            report(result, str(cfg.model.precision), str(cfg.model.tta))
            report_products(make_products(sources[0], result, cfg, progress=progress))
            return
        outcome = infer_many(list(sources), out, cfg, progress=progress, model=model)
    except USER_ERRORS as e:
        raise click.ClickException(one_line(sources[0], e)) from None
    except KeyboardInterrupt:
        click.echo(f"interrupted; nothing written at {out}", err=True)
        sys.exit(130)
    except Terminated:
        click.echo(f"terminated; nothing written at {out}", err=True)
        sys.exit(143)
    failed = 0
    for src, r in outcome.items():
        try:
            if isinstance(r, Exception):
                raise r
            report(r, str(cfg.model.precision), str(cfg.model.tta))
            report_products(make_products(src, r, cfg, batch=True, progress=progress))
        except USER_ERRORS as e:
            failed += 1
            click.echo(f"Error: {one_line(src, e)}", err=True)
    if failed:
        raise click.ClickException(f"{len(outcome) - failed} of {len(outcome)} scenes written; {failed} failed")


def _masks(sources: tuple[Path, ...], out: Path, cfg: PipelineConfig, batch: bool) -> list[Path]:
    """The mask path of every scene whose format can be told (the others fail on their own later)."""
    from pipeline.errors import USER_ERRORS
    from pipeline.infer import mask_path_for

    if not batch:
        return [out]
    masks = []
    for src in sources:
        try:
            masks.append(mask_path_for(src, out, cfg.output_format))
        except USER_ERRORS:
            continue
    return masks


@click.command()
@click.argument("src", type=click.Path(path_type=Path), nargs=-1, required=True)
@click.option(
    "--out", "-o", type=click.Path(path_type=Path), required=True,
    help="Output mask; a folder when several SRC are given.",
)  # fmt: skip
@config_options()
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@click.pass_context
def infer(ctx: click.Context, /, src: tuple[Path, ...], out: Path, progress: bool, **values: Any) -> None:
    """Segment SRC into a mask at OUT.

    SRC is a GeoTIFF/COG, a DICOM series folder, a DICOM file (enhanced
    multi-frame or whole-slide) or a Zarr/OME-Zarr store, of any size. OUT's
    extension picks the format: .tif (COG with the source's georeferencing),
    .zarr (OME-Zarr) or .dcm (DICOM SEG referencing the source images).
    An OUT in an OME-Zarr SRC's labels group (SRC/labels/NAME) adds the mask
    to that image as its label image NAME, one level per image level, where
    napari and other OME-Zarr readers look; the image itself is not touched.

    With several SRC, OUT is a folder and each mask is OUT/<stem>_mask.<ext>,
    in the source's own format; a scene that fails is reported and the
    others still finish.

    A COG mask comes with a QGIS style (.qml) and a STAC Item (.json).
    --vector adds polygons per class (GeoPackage), --quicklook a PNG.
    """
    # a program embedding tilewise may hand a model in: cli.main(args, obj={"model": m, "normalization": n})
    run_infer(src, out, values, progress, ctx.find_root().obj)
