"""tiling imports neither torch nor Ray; models does not import Ray (DESIGN.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "package, forbidden",
    [("tiling", ("torch", "ray", "models", "pipeline")), ("models", ("ray", "tiling", "pipeline"))],
)
def test_package_does_not_pull_in(package: str, forbidden: tuple[str, ...]) -> None:
    code = (
        f"import sys, pkgutil, importlib, {package}\n"
        f"for m in pkgutil.walk_packages({package}.__path__, '{package}.'): importlib.import_module(m.name)\n"
        f"print(','.join(sorted(n for n in {forbidden!r} if n in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
