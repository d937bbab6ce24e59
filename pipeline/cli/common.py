"""What every command shares: logging set-up, one-line errors, and the run report."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import click

from tiling.errors import NotGeoreferencedWarning

__all__ = ["one_line", "report", "report_products", "setup_logging"]


def setup_logging(verbose: int, quiet: int) -> None:
    """Log at WARNING, one step more per ``-v`` and less per ``-q``; warnings go through logging."""
    level = logging.WARNING - 10 * verbose + 10 * quiet
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    warnings.simplefilter("always", NotGeoreferencedWarning)


def one_line(src: Path, e: BaseException) -> str:
    """``e``'s message on one line, prefixed with ``src`` unless it already names it."""
    msg = " ".join(str(e).split())
    return msg if str(src) in msg else f"{src}: {msg}"


def report(result: object) -> None:
    """Print where an inference run wrote its outputs, and how fast it went."""
    click.echo(f"mask: {result.mask}")  # type: ignore[attr-defined]
    probs = getattr(result, "probs", None)
    if probs:
        click.echo(f"probabilities: {probs}")
    click.echo(
        f"{result.tiles} tiles ({result.skipped} nodata) in {result.seconds:.1f} s, "  # type: ignore[attr-defined]
        f"{result.tiles_per_second:.2f} tiles/s"  # type: ignore[attr-defined]
    )


def report_products(products: object) -> None:
    """Print where the products of a run (polygons, quicklook) went."""
    if getattr(products, "vector", None):
        click.echo(f"polygons: {products.vector} ({products.features} features)")  # type: ignore[attr-defined]
    if getattr(products, "quicklook", None):
        click.echo(f"quicklook: {products.quicklook}")  # type: ignore[attr-defined]
