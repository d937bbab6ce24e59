"""The README runs as written: its Python example runs, and every command of its shell blocks is one this
checkout has (a Makefile target, an extra of pyproject.toml, a ``tilewise`` line the CLI parses)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import rasterio
import torch

from pipeline.demo import make_scene
from tests.support.docs import ROOT, check_tilewise, code_blocks, make_targets, materialise, shell_commands

README = ROOT / "README.md"
#: The README is the package's long description and a front page: it stays short.
MAX_LINES = 200


def extras() -> set[str]:
    """The extras pyproject.toml declares (read as text: tomllib needs Python 3.11, tilewise runs on 3.10)."""
    section = (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([\w-]+) = \[", section, re.M))


def readme_commands() -> list[list[str]]:
    return [c for block in code_blocks(README.read_text(), "bash", "sh") for c in shell_commands(block)]


def check_command(words: list[str]) -> None:
    """Fail unless ``words`` is a command the README may show: each kind is checked against the checkout."""
    line = shlex.join(words)
    program = words[0]
    if program == "make":
        assert set(words[1:]) <= make_targets(), f"{line}: the Makefile has no such target"
    elif program == "tilewise":
        check_tilewise(words[1:])
    elif program.endswith("pip") and words[1:3] == ["install", "-e"]:
        (spec,) = words[3:]
        m = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", spec)
        assert m, f"{line}: installs something other than this checkout"
        assert set((m.group(1) or "").split(",")) - {""} <= extras(), f"{line}: pyproject.toml has no such extra"
    elif words == ["python3", "-m", "venv", ".venv"]:
        pass
    else:
        raise AssertionError(f"{line}: a command the README test does not know; check it here")


def test_python_example_runs_as_written(ray_session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (code,) = code_blocks(README.read_text(), "python")
    make_scene(tmp_path / "scene.tif", size=96)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"my_module": torch.nn.Conv2d(3, 2, kernel_size=1)})
    with rasterio.open(tmp_path / "scene.tif") as s, rasterio.open(tmp_path / "mask.tif") as m:
        assert (m.crs, m.transform, m.shape) == (s.crs, s.transform, s.shape)
    assert (tmp_path / "mask_custom.tif").exists()


def test_every_shell_command_in_the_readme_is_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the files the examples name exist here, should a parser check
    commands = readme_commands()
    for words in commands:
        materialise(words, tmp_path)
        check_command(words)
    # the two commands come first, and every tilewise command has its example
    assert commands[:2] == [["make", "demo"], ["make", "test"]]
    shown = {w[1] for w in commands if w[0] == "tilewise"}
    assert shown == {"infer", "batch", "train", "evaluate", "compare", "qa", "demo"}


def test_the_readme_is_a_front_page_not_a_manual() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_LINES
    for target in re.findall(r"\]\(((?!https?:)[^)#]+)", text):  # relative links work on GitHub and in a checkout
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


@pytest.mark.parametrize(
    "words",
    [
        ["tilewise", "infer", "scene.tif", "--out", "mask.tif", "--tile-size", "256", "--weights", "m.pt"],
        ["tilewise", "infer", "scene.tif", "--out", "mask.tif"],
        ["tilewise", "segment", "scene.tif"],
        ["make", "deploy"],
        [".venv/bin/pip", "install", "-e", ".[gpu]"],
        ["curl", "https://example.com/install.sh"],
    ],
    ids=["unknown-flag", "no-model", "unknown-command", "no-target", "no-extra", "unknown-program"],
)
def test_a_wrong_command_is_caught(words: list[str]) -> None:
    """The checker itself: each kind of wrong line fails it."""
    with pytest.raises(AssertionError):
        check_command(words)
