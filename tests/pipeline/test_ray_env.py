"""Starting Ray: tilewise starts its own unless told to join a cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import rasterio

from tests.conftest import write_scene

ROOT = Path(__file__).resolve().parents[2]


def test_a_ray_started_by_someone_else_on_this_machine_is_not_joined(tmp_path) -> None:
    """``ray.init()`` joins the cluster named in ``<tmp>/ray/ray_current_cluster`` (what ``ray start``
    writes) and then refuses ``num_cpus`` with a ValueError; tilewise must start its own Ray instead."""
    src = write_scene(tmp_path / "scene.tif", np.random.default_rng(0).integers(1, 255, (3, 64, 64), np.uint8))
    out = tmp_path / "m.tif"
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths have a length limit
    try:
        (ray_tmp / "ray").mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")  # another user's (dead) cluster
        script = textwrap.dedent(f"""
            from models import Normalization
            from pipeline.config import ModelConfig, PipelineConfig, RayConfig, TilingConfig
            from pipeline.infer import infer_scene
            from tests.support.models import pointwise
            cfg = PipelineConfig(TilingConfig(tile=32), ModelConfig(classes=2, precision="fp32", channels_last=False),
                                 ray=RayConfig(num_cpus=2))
            infer_scene({str(src)!r}, {str(out)!r}, cfg, model=pointwise(),
                        normalization=Normalization((128.0,) * 3, (64.0,) * 3), progress=False)
        """)
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": str(ray_tmp)},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Token authentication" not in done.stderr  # Ray's start-up notice is not a user's concern
    with rasterio.open(out) as m:
        assert m.shape == (64, 64)
