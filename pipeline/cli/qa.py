"""``tilewise qa``: seam QA of finished COG masks, from what the mask records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pipeline.cli.common import one_line, qa_line

__all__ = ["qa", "qa_mask"]


def _masks(target: Path) -> list[Path]:
    """``target`` itself, or the tilewise COG masks of a run folder (not their .probs or .qa rasters)."""
    from tiling.errors import ConfigError
    from tiling.formats.geotiff.qa import PLAN_TAG

    if not target.is_dir():
        if not target.exists():
            raise ConfigError(f"{target}: no such mask or run folder")
        return [target]
    import rasterio

    found = []
    for path in sorted(target.glob("*.tif")):
        if path.name.endswith((".probs.tif", ".qa.tif")) or path.name.startswith("."):
            continue
        with rasterio.open(path) as ds:
            if PLAN_TAG in ds.tags():
                found.append(path)
    if not found:
        raise ConfigError(f"{target}: holds no COG mask that records its tile plan; give a mask of tilewise infer")
    return found


def qa_mask(mask: Path, overwrite: bool = False) -> dict[str, Any]:
    """Write ``<stem>.qa.tif``, ``<stem>.qa.json`` and ``<stem>.qa.qml`` beside ``mask`` from its recorded tile plan;
    returns the report. The mask's STAC Item, where there is one, lists them (a warning if it cannot).

    Raises:
        ConfigError: if the mask records no tile plan, or a QA file exists and ``overwrite`` is off.
        SinkError: if a QA file exists that tilewise did not write, or cannot be written.
    """
    from tiling.errors import ConfigError, SinkError
    from tiling.formats import get_format
    from tiling.formats.base import check_writable
    from tiling.formats.geotiff.qa import QaFiles, qa_paths, read_qa_tags
    from tiling.formats.geotiff.sidecars import add_assets, optional

    plan, disagreement, grid = read_qa_tags(mask)
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
def qa(target: tuple[Path, ...], overwrite: bool) -> None:
    """Seam QA of finished masks. TARGET is a COG mask tilewise wrote, or a run folder of them.

    Writes <mask>.qa.tif beside each (band 1: how many tiles cover each pixel;
    band 2: the sum of their blend weights; decimated so its longest side
    is at most 4096 px) and <mask>.qa.json, recomputed from the tile plan the
    mask records, and prints the overlap disagreement measured by
    tilewise infer --qa (the share of pixels predicted by two or more tiles
    whose classes differ), where the run measured it.
    """
    from pipeline.errors import USER_ERRORS

    for t in target:
        try:
            for mask in _masks(t):
                report = qa_mask(mask, overwrite)
                click.echo(f"{mask}: {qa_line(report)}")
                click.echo(f"  wrote {mask.with_name(report['coverage']['raster'])}, {mask.stem}.qa.json and .qa.qml")
        except USER_ERRORS as e:
            raise click.ClickException(one_line(t, e)) from None
