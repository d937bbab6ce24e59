"""What every command shares: logging set-up, one-line errors, and the run report."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tiling.errors import NotGeoreferencedWarning

if TYPE_CHECKING:
    from pipeline.infer import InferenceResult

__all__ = ["one_line", "qa_line", "report", "report_products", "setup_logging"]


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
    if result.model_seconds:
        line += f"; model time {result.model_seconds:.1f} s"
    click.echo(line)
    qa = next((p for p in result.published if p.name.endswith(".qa.json")), None)
    if qa is not None:
        click.echo(f"seam QA: {qa_line(json.loads(qa.read_text(encoding='utf-8')))}")


def qa_line(report: dict[str, Any]) -> str:
    """One line of a seam QA report (``<mask>.qa.json``): the disagreement and the coverage."""
    d = report.get("disagreement")
    if d and d.get("share") is not None:
        text = (
            f"overlap disagreement {100 * d['share']:.2f}% ({d['pixels']:,} of {d['overlap_pixels']:,} overlap pixels)"
        )
    elif d:
        text = "no pixel is covered by two tiles, so no disagreement to measure"
    else:
        text = "overlap disagreement not measured (segment with tilewise infer --qa)"
    cov = report["coverage"]
    under = cov["share_under_tiles"]
    overlap = 1 - under["0"] - under["1"]
    return f"{text}; {100 * overlap:.1f}% of the scene under 2+ tiles (up to {cov['max_tiles']:g})"


def report_products(products: object) -> None:
    """Print where the products of a run (polygons, quicklook) went, and one warning line per product that failed."""
    if getattr(products, "vector", None):
        click.echo(f"polygons: {products.vector} ({products.features} features)")  # type: ignore[attr-defined]
    if getattr(products, "quicklook", None):
        click.echo(f"quicklook: {products.quicklook}")  # type: ignore[attr-defined]
    for line in getattr(products, "warnings", ()):
        click.echo(f"Warning: {line}", err=True)
