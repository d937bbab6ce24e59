"""What every command shares: logging set-up, one-line errors, and the run report."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tiling.errors import NotGeoreferencedWarning

if TYPE_CHECKING:
    from pipeline.infer import InferenceResult

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


def report(result: InferenceResult, requested_precision: str = "", tta: str = "none") -> None:
    """Print where an inference run wrote its outputs, how fast it went, and in which precision.

    Args:
        result: the run's result.
        requested_precision: what the user asked for; ``auto`` is shown with what it became.
        tta: the test-time augmentation the run used (its cost is said: forward passes per tile).
    """
    click.echo(f"mask: {result.mask}")
    for extra in result.published[1:]:
        click.echo(f"{'probabilities' if extra == result.probs else 'also'}: {extra}")
    line = f"{result.tiles} tiles ({result.skipped} nodata) in {result.seconds:.1f} s, {result.tiles_per_second:.2f} tiles/s"
    if result.precision:
        chosen = " (chosen by --precision auto for this hardware)" if requested_precision == "auto" else ""
        line += f", precision {result.precision}{chosen}"
    if tta == "flips":
        line += ", --tta flips (4 forward passes per tile)"
    click.echo(line)


def report_products(products: object) -> None:
    """Print where the products of a run (polygons, quicklook) went."""
    if getattr(products, "vector", None):
        click.echo(f"polygons: {products.vector} ({products.features} features)")  # type: ignore[attr-defined]
    if getattr(products, "quicklook", None):
        click.echo(f"quicklook: {products.quicklook}")  # type: ignore[attr-defined]
