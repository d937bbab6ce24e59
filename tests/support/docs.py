"""Reading the shell and Python examples of the README and the documentation pages, and checking their
``tilewise`` command lines with the CLI's own parser (click), so an example that would not run fails a test."""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import click

from pipeline.cli import cli

ROOT = Path(__file__).resolve().parents[2]

#: Commands that run a model: a line must name one (the run is refused otherwise).
MODEL_COMMANDS = ("infer", "batch")


def code_blocks(text: str, *langs: str) -> list[str]:
    """The bodies of the fenced code blocks of ``text`` in one of ``langs`` (indented blocks in lists too)."""
    blocks = []
    for m in re.finditer(r"^( *)```(\w*)\n(.*?)^\1```", text, re.M | re.S):
        if m.group(2) in langs:
            indent = len(m.group(1))
            blocks.append("\n".join(line[indent:] for line in m.group(3).splitlines()))
    return blocks


def shell_commands(block: str) -> list[list[str]]:
    """Each command of a shell block as words: continuations joined, comments dropped, ``&&`` split."""
    commands = []
    for line in re.sub(r"\\\n", " ", block).splitlines():
        words = shlex.split(line, comments=True)
        command: list[str] = []
        for w in [*words, "&&"]:
            if w == "&&":
                if command:
                    commands.append(command)
                command = []
            else:
                command.append(w)
    return commands


def make_targets() -> set[str]:
    """The targets the Makefile defines."""
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))


def parse_tilewise(args: list[str]) -> click.Context:
    """Parse ``tilewise ARGS`` as the CLI would (group options, the command, its options and arguments), without
    running it; a click ``UsageError`` says what is wrong. Returns the command's context."""
    with cli.make_context("tilewise", list(args), resilient_parsing=False) as group:
        with warnings.catch_warnings():  # click < 9 keeps the command's name apart, deprecated since 8.2
            warnings.simplefilter("ignore", DeprecationWarning)
            protected = list(getattr(group, "protected_args", []))
        name, command, rest = cli.resolve_command(group, [*protected, *group.args])
        assert command is not None and name is not None, f"tilewise has no command in {args}"
        return command.make_context(name, rest, parent=group, resilient_parsing=False)


def check_tilewise(args: list[str]) -> None:
    """Fail unless ``tilewise ARGS`` parses and, for a command that runs a model, names one."""
    line = "tilewise " + shlex.join(args)
    try:
        ctx = parse_tilewise(args)
    except click.UsageError as e:
        raise AssertionError(f"{line}: {e.format_message()}") from e
    except click.exceptions.Exit as e:  # --help, --version: parsed, printed, done
        assert e.exit_code == 0, line
        return
    params = {k.rsplit("__", 1)[-1]: v for k, v in ctx.params.items()}  # flags set config fields: "model__weights"
    if ctx.command.name in MODEL_COMMANDS:
        assert params.get("weights") or params.get("random_weights") is not None, (
            f"{line}: names no model (--weights or --random-weights), so tilewise would refuse it"
        )


#: Arguments that name a file or folder an example expects to exist (by suffix, or a trailing slash).
_PATHLIKE = re.compile(r"^[\w./-]+(/|\.(tif|tiff|dcm|zarr|pt|pth|yaml|yml|json|csv|gpkg|geojson|png))$")


def materialise(args: list[str], root: Path) -> None:
    """Create, under ``root``, an empty file or folder for each relative path in ``args``, so a parser that checks
    existence finds them (the examples name files like ``scene.tif`` that a reader would have)."""
    for a in args:
        if a.startswith(("-", "/")) or "://" in a or "*" in a or not _PATHLIKE.match(a):
            continue
        path = root / a
        if a.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
