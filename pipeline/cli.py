"""The ``tilewise`` command line: thin commands over :mod:`pipeline`.

User errors (bad input, bad options, unwritable output) print one line,
``Error: <file>: <problem>``, and exit 1 without a traceback.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import click

from models import Backbone, Precision
from pipeline.sinks import OutputFormat
from tiling import BlendMode, EdgeMode, NotGeoreferencedWarning

__all__ = ["cli", "main"]

log = logging.getLogger("tilewise")


def _csv_ints(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated band numbers like 1,2,3, got {value!r}") from None


def _setup_logging(verbose: int, quiet: int) -> None:
    level = logging.WARNING - 10 * verbose + 10 * quiet
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    warnings.simplefilter("always", NotGeoreferencedWarning)


def _choice(enum: type) -> click.Choice:
    return click.Choice([m.value for m in enum], case_sensitive=False)


def inference_options(f):
    """Options shared by ``infer`` and ``demo``, declared once."""
    opts = [
        click.option("--tile", type=int, default=512, show_default=True, help="Tile size in pixels."),
        click.option(
            "--overlap", type=float, default=0.25, show_default=True, help="Tile overlap, a fraction in [0, 1)."
        ),
        click.option(
            "--blend",
            type=_choice(BlendMode),
            default="gaussian",
            show_default=True,
            help="How overlapping tiles are combined.",
        ),
        click.option(
            "--edge",
            type=_choice(EdgeMode),
            default="shift",
            show_default=True,
            help="Last tile per axis: shift inward or pad.",
        ),
        click.option("--batch", type=int, default=8, show_default=True, help="Tiles per forward pass."),
        click.option("--classes", type=int, default=2, show_default=True, help="Number of output classes K."),
        click.option("--class-names", default=None, help="Comma-separated class names (K of them)."),
        click.option("--backbone", type=_choice(Backbone), default="resnet101", show_default=True),
        click.option(
            "--weights",
            type=click.Path(dir_okay=False),
            default=None,
            help="Local torchvision/tilewise checkpoint; random init if omitted.",
        ),
        click.option("--precision", type=_choice(Precision), default="bf16", show_default=True),
        click.option(
            "--bands", callback=_csv_ints, default=None, help="1-based bands to use, e.g. 1,2,3 (default: all)."
        ),
        click.option(
            "--save-probs",
            is_flag=True,
            help="Also write per-class probabilities (x255): <out>.probs.tif, or probs/ in a .zarr.",
        ),
        click.option(
            "--format",
            "output_format",
            type=_choice(OutputFormat),
            default=None,
            help="Mask format (default: from --out's extension: .tif, .zarr, .dcm).",
        ),
        click.option("--series", default=None, help="DICOM SeriesInstanceUID, when the folder holds several series."),
        click.option("--level", type=int, default=None, help="OME-Zarr multiscale level to segment (default 0)."),
        click.option(
            "--window", default=None, help="CT intensity window 'low,high' in HU, or soft-tissue|lung|bone|brain."
        ),
        click.option(
            "--axis", type=int, default=0, show_default=True, help="Volumes: segment slice by slice across this axis."
        ),
        click.option(
            "--context",
            type=click.Choice(["1", "3"]),
            default="1",
            show_default=True,
            help="Volumes: 3 = 2.5-D (the slice and its neighbours as channels).",
        ),
        click.option("--actors", type=int, default=None, help="Model replicas (default: one per GPU, else one)."),
        click.option("--device", default=None, help="torch device (default: cuda if available, else cpu)."),
        click.option(
            "--address", default=None, envvar="RAY_ADDRESS", help="Ray cluster to join (default: start a local Ray)."
        ),
        click.option("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all)."),
        click.option(
            "--allow-no-crs", is_flag=True, help="Accept a source without CRS (the mask keeps only the pixel grid)."
        ),
        click.option("--progress/--no-progress", default=True, help="Show a progress bar."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _config(o: dict):
    from pipeline.config import InferenceConfig, InputConfig, ModelConfig, PipelineConfig, RayConfig, TilingConfig

    names = tuple(n.strip() for n in o["class_names"].split(",")) if o["class_names"] else None
    return PipelineConfig(
        tiling=TilingConfig(o["tile"], o["overlap"], o["blend"], o["edge"], o["bands"], o["axis"], int(o["context"])),
        input=InputConfig(o["series"], o["level"], o["window"]),
        model=ModelConfig(o["backbone"], o["classes"], o["weights"], o["precision"], True, names),
        inference=InferenceConfig(batch=o["batch"], actors=o["actors"], device=o["device"]),
        ray=RayConfig(o["address"], o["num_cpus"]),
        save_probs=o["save_probs"],
        allow_no_crs=o["allow_no_crs"],
        output_format=o["output_format"],
    )


def _one_line(src: Path, e: Exception) -> str:
    msg = " ".join(str(e).split())
    return msg if str(src) in msg else f"{src}: {msg}"


def _report(result) -> None:
    click.echo(f"mask: {result.mask}")
    if result.probs:
        click.echo(f"probabilities: {result.probs}")
    click.echo(
        f"{result.tiles} tiles ({result.skipped} nodata) in {result.seconds:.1f} s, {result.tiles_per_second:.2f} tiles/s"
    )


def _run_infer(sources: tuple[Path, ...], out: Path, o: dict) -> None:
    from pipeline.config import PipelineConfig
    from pipeline.infer import USER_ERRORS, infer_many, infer_scene

    try:
        cfg: PipelineConfig = _config(o).validate()
        if len(sources) == 1:
            _report(infer_scene(sources[0], out, cfg, progress=o["progress"]))
            return
        if not out.is_dir():
            raise click.ClickException(f"{out}: with several sources, --out must be an existing folder")
        outcome = infer_many(list(sources), out, cfg, progress=o["progress"])
    except USER_ERRORS as e:
        raise click.ClickException(_one_line(sources[0], e)) from None
    except KeyboardInterrupt:
        click.echo(f"interrupted; nothing written at {out}", err=True)
        sys.exit(130)
    failed = {s: r for s, r in outcome.items() if isinstance(r, Exception)}
    for src, r in outcome.items():
        if src in failed:
            click.echo(f"Error: {_one_line(src, r)}", err=True)
        else:
            _report(r)
    if failed:
        raise click.ClickException(
            f"{len(outcome) - len(failed)} of {len(outcome)} scenes written; {len(failed)} failed"
        )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tilewise")
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
@click.option("-q", "--quiet", count=True, help="Less log output.")
def cli(verbose: int, quiet: int) -> None:
    """tilewise: seam-free tiled segmentation of huge rasters on Ray."""
    _setup_logging(verbose, quiet)


@cli.command()
@click.argument("src", type=click.Path(path_type=Path), nargs=-1, required=True)
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    required=True,
    help="Output mask (COG); a folder when several SRC are given.",
)
@inference_options
def infer(src: tuple[Path, ...], out: Path, **o) -> None:
    """Segment SRC into a mask at OUT.

    SRC is a GeoTIFF/COG, a DICOM series folder, a DICOM file (enhanced
    multi-frame or whole-slide) or a Zarr/OME-Zarr store, of any size. OUT's
    extension picks the format: .tif (COG with the source's georeferencing),
    .zarr (OME-Zarr) or .dcm (DICOM SEG referencing the source images).

    With several SRC, OUT is a folder and each mask is OUT/<stem>_mask.tif;
    a scene that fails is reported and the others still finish.
    """
    _run_infer(src, out, o)


@cli.command()
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    default=Path("tilewise-demo"),
    show_default=True,
    help="Where the sample scene and mask go.",
)
@click.option("--size", type=int, default=1024, show_default=True, help="Side of the generated scene in pixels.")
@inference_options
def demo(workdir: Path, size: int, **o) -> None:
    """Generate a sample scene and segment it on an embedded Ray, with built-in defaults."""
    from pipeline.demo import make_scene

    scene = make_scene(workdir / "scene.tif", size=size)
    click.echo(f"sample scene: {scene} ({size}x{size}, 3 bands, EPSG:32633)")
    _run_infer((scene,), workdir / "mask.tif", o)
    click.echo(f"open {workdir / 'mask.tif'} in QGIS next to {scene}")


def main() -> None:
    """Entry point of the ``tilewise`` command."""
    cli(prog_name="tilewise")
