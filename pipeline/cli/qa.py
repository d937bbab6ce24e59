"""``tilewise qa``: seam QA of finished COG masks, from what the mask records."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline.cli.common import one_line, qa_line
from pipeline.cli.options import FLAGS, build_config, config_options

if TYPE_CHECKING:
    from tiling.formats.base import SourceLimits

__all__ = ["qa", "qa_mask"]

#: The size limits infer applies to a source, applied here to a mask (a header is a claim).
_LIMIT_FLAGS = tuple(f for f in FLAGS if f.field in ("max_pixels", "max_bands", "max_chunk_mb"))


def _masks(target: Path) -> tuple[list[Path], list[str]]:
    """``target`` itself, or the tilewise COG masks of a run folder (not their .probs or .qa rasters).

    Returns:
        The masks, and one line for each ``.tif`` of the folder that cannot be read.

    Raises:
        ConfigError: if ``target`` is missing, or a folder without a mask.
    """
    from tiling.errors import ConfigError
    from tiling.formats.geotiff.qa import PLAN_TAG

    if not target.is_dir():
        if not target.exists():
            raise ConfigError(f"{target}: no such mask or run folder")
        return [target], []
    import rasterio
    from rasterio.errors import RasterioError

    found, unreadable = [], []
    for path in sorted(target.glob("*.tif")):
        if path.name.endswith((".probs.tif", ".qa.tif")) or path.name.startswith("."):
            continue
        try:
            with rasterio.open(path) as ds:
                tags = ds.tags()
        except (RasterioError, OSError) as e:
            unreadable.append(f"{path}: cannot be read as a GeoTIFF ({' '.join(str(e).split())}); skipped")
            continue
        if PLAN_TAG in tags:
            found.append(path)
    if not found and not unreadable:
        raise ConfigError(f"{target}: holds no COG mask that records its tile plan; give a mask of tilewise infer")
    return found, unreadable


def qa_mask(mask: Path, overwrite: bool = False, limits: SourceLimits | None = None) -> dict[str, Any]:
    """Write ``<stem>.qa.tif``, ``<stem>.qa.json`` and ``<stem>.qa.qml`` beside ``mask`` from its recorded tile plan;
    returns the report. The mask's STAC Item, where there is one, lists them (a warning if it cannot).

    Args:
        mask: a COG mask tilewise wrote.
        overwrite: replace QA files tilewise wrote before.
        limits: the largest mask accepted (what its header claims is checked before any work);
            the defaults infer applies when None.

    Raises:
        ConfigError: if the mask records no tile plan, or a QA file exists and ``overwrite`` is off.
        SourceTooLargeError: if the mask claims more than ``limits`` allow.
        SinkError: if a QA file exists that tilewise did not write, or cannot be written.
    """
    from tiling.errors import ConfigError, SinkError
    from tiling.formats import DEFAULT_LIMITS, get_format, open_source
    from tiling.formats.base import check_writable
    from tiling.formats.geotiff.qa import QaFiles, qa_paths, read_qa_tags
    from tiling.formats.geotiff.sidecars import add_assets, optional

    plan, disagreement, grid = read_qa_tags(mask)
    with open_source(mask, "geotiff", limits=limits or DEFAULT_LIMITS):  # what its header claims, checked
        pass
    owns = get_format("geotiff").owns
    for path in qa_paths(mask):
        check_writable(path)
        if path.exists() or path.is_symlink():
            if not overwrite:
                raise ConfigError(f"{path}: exists; pass --overwrite to replace it")
            if path.is_symlink() or owns is None or not owns(path):
                raise SinkError(
                    f"{path}: exists and was not written by tilewise, so it is never replaced; move it away"
                )
    files = QaFiles(mask, plan, grid["shape"], grid["crs"], grid["transform"])
    try:
        report = files.write(disagreement)
        files.publish()
    except BaseException:
        files.remove()
        raise
    item = mask.with_suffix(".json")
    if item.is_file():
        assets = dict(zip(("qa", "qa_report", "qa_style"), files.finals))
        optional("STAC Item listing of the QA files", item, lambda: add_assets(item, assets))
    return report


@click.command()
@click.argument("target", type=click.Path(path_type=Path), nargs=-1, required=True)
@click.option("--overwrite", is_flag=True, help="Replace QA files tilewise wrote before.")
@config_options(_LIMIT_FLAGS)
@click.pass_context
def qa(ctx: click.Context, /, target: tuple[Path, ...], overwrite: bool, **values: Any) -> None:
    """Seam QA of finished masks. TARGET is a COG mask tilewise wrote, or a run folder of them.

    Writes <mask>.qa.tif beside each (band 1: how many tiles cover each pixel;
    band 2: the sum of their blend weights; decimated so its longest side
    is at most 4096 px) and <mask>.qa.json, recomputed from the tile plan the
    mask records, and prints the overlap disagreement measured by
    tilewise infer --qa (the share of pixels predicted by two or more tiles
    whose classes differ), where the run measured it. A mask whose header
    claims more than --max-pixels, --max-bands or --max-chunk-mb allow is
    refused, as infer refuses such a source.

    Every mask is tried: one that cannot be read or checked is one Error
    line, and the others still go. Exit status: 0 all done, 1 if any failed.
    """
    from pipeline.errors import USER_ERRORS

    try:
        limits = build_config(values, _LIMIT_FLAGS).validate().input.limits()
    except USER_ERRORS as e:
        raise click.ClickException(" ".join(str(e).split())) from None
    failed = 0
    for t in target:
        try:
            masks, unreadable = _masks(t)
        except USER_ERRORS as e:
            masks, unreadable = [], [one_line(t, e)]
        for line in unreadable:
            click.echo(f"Error: {line}", err=True)
        failed += len(unreadable)
        for mask in masks:
            try:
                report = qa_mask(mask, overwrite, limits)
            except USER_ERRORS as e:
                click.echo(f"Error: {one_line(mask, e)}", err=True)
                failed += 1
                continue
            click.echo(f"{mask}: {qa_line(report)}")
            click.echo(f"  wrote {mask.with_name(report['coverage']['raster'])}, {mask.stem}.qa.json and .qa.qml")
    if failed:
        ctx.exit(1)
