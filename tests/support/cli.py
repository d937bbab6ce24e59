"""Running the ``tilewise`` CLI in-process, and reading its one-line errors."""

from __future__ import annotations

from click.testing import CliRunner, Result

from pipeline.cli import cli


def run(*args: object) -> Result:
    """``tilewise ARGS`` through click's runner; exceptions propagate."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_error(result: Result) -> str:
    """The single ``Error:`` line of a run that failed with status 1 and no traceback."""
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    return line
