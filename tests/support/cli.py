"""Running the ``tilewise`` CLI in-process, and reading its one-line errors."""

from __future__ import annotations

from click.testing import CliRunner, Result

from pipeline.cli import cli

#: Commands that run a model, and need weights or ``--random-weights``.
_MODEL_COMMANDS = ("infer", "batch")


def untrained(args: list[str]) -> list[str]:
    """``args`` with ``--random-weights 0`` added where an ``infer`` or ``batch`` run names no model.

    Most CLI tests are about something other than the model (options, errors,
    outputs): an untrained network from a fixed seed serves them, and is the
    same network in every process.
    """
    if (
        args
        and args[0] in _MODEL_COMMANDS
        and not {"--weights", "--random-weights"} & set(args)
        and "--help" not in args
    ):
        return [*args, "--random-weights", "0"]
    return args


def run(*args: object, obj: dict | None = None) -> Result:
    """``tilewise ARGS`` through click's runner (an untrained model unless weights are named); exceptions propagate."""
    return CliRunner().invoke(cli, untrained([str(a) for a in args]), obj=obj, catch_exceptions=False)


def one_error(result: Result) -> str:
    """The single ``Error:`` line of a run that failed with status 1 and no traceback."""
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    return line
