"""The wheel built from pyproject.toml carries every package and subpackage of the source tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_every_module_and_the_type_markers(tmp_path: Path) -> None:
    # Build from a copy: setuptools builds inside the source folder, and a stale
    # build/ there could both litter the checkout and hide a missing package.
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("tiling", "models", "pipeline"):
        shutil.copytree(ROOT / package, src / package, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    subprocess.run([*command, str(src)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("tilewise-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        str(p.relative_to(ROOT))
        for package in ("tiling", "models", "pipeline")
        for p in (ROOT / package).rglob("*")
        if (p.suffix == ".py" or p.name == "py.typed") and "__pycache__" not in p.parts
    }
    assert expected, "the source tree was found"
    assert expected - names == set(), "every module of the source tree is in the wheel"
    assert not {n for n in names if n.startswith("tests/")}, "tests are not shipped"
    assert "tiling/formats/dicom/seg.py" in names and "pipeline/cli/options.py" in names
