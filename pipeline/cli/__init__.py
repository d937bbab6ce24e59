"""The ``tilewise`` command line: a click group with one module per command.

User errors (bad input, bad options, unwritable output) print one line,
``Error: <file>: <problem>``, and exit 1 without a traceback.
"""

from __future__ import annotations

import os

# Ray reads this when it is imported, not when it starts: set later, Ray's C++ failure handler would
# still catch SIGTERM, print a stack dump and abort (status 134) after tilewise handled the signal.
os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")

import click

from pipeline.cli.batch import batch
from pipeline.cli.common import setup_logging
from pipeline.cli.compare import compare
from pipeline.cli.demo import demo
from pipeline.cli.evaluate import evaluate
from pipeline.cli.infer import infer
from pipeline.cli.qa import qa
from pipeline.cli.train import train

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tilewise")
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
@click.option("-q", "--quiet", count=True, help="Less log output.")
def cli(verbose: int, quiet: int) -> None:
    """tilewise: seam-free tiled segmentation of huge rasters on Ray."""
    setup_logging(verbose, quiet)


cli.add_command(infer)
cli.add_command(batch)
cli.add_command(demo)
cli.add_command(train)
cli.add_command(evaluate)
cli.add_command(compare)
cli.add_command(qa)


def main() -> None:
    """Entry point of the ``tilewise`` command."""
    cli(prog_name="tilewise")
