"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import rasterio
import torch

from pipeline.demo import make_scene

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_example_runs_as_written(ray_session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    section = README.read_text().split("### Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    make_scene(tmp_path / "scene.tif", size=96)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"my_module": torch.nn.Conv2d(3, 2, kernel_size=1)})
    with rasterio.open(tmp_path / "scene.tif") as s, rasterio.open(tmp_path / "mask.tif") as m:
        assert (m.crs, m.transform, m.shape) == (s.crs, s.transform, s.shape)
    assert (tmp_path / "mask_custom.tif").exists()
