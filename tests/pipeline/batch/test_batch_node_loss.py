"""Node loss: a worker node of a three-node Ray cluster (``ray.cluster_utils.Cluster``, on this machine)
is removed in the middle of a batch; the job completes with masks identical to an uninterrupted run's.

The cluster cannot share the session's Ray, so it runs in a subprocess (``node_loss_job.py``)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_scene

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_a_batch_survives_losing_the_model_actors_node(tmp_path) -> None:
    clean, archive, out = (tmp_path / n for n in ("clean", "archive", "out"))
    for folder in (clean, archive, out):
        folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(2):
        scene = write_scene(archive / f"s{i}.tif", rng.integers(1, 255, (3, 384, 384), np.uint8))
        shutil.copyfile(scene, clean / f"c{i}.tif")  # segmented first, before the node goes
    done = subprocess.run(
        [sys.executable, "-m", "tests.pipeline.batch.node_loss_job", clean, archive, out],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=480,
    )  # fmt: skip
    log = done.stdout + done.stderr[-3000:]
    assert "REMOVED True" in done.stdout, log
    assert "RUN 0 " in done.stdout and "4 segmented" in done.stdout, log
    for i in range(2):
        a, b = out / f"s{i}_mask.tif", out / f"c{i}_mask.tif"
        assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest(), a.name
