"""--vector killed while it writes its GeoPackage: the next run removes what it left (issue 19, item 8)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from pipeline.products import polygonize
from tiling import GeoRef, Window
from tiling.formats.geotiff.writer import CogSink

ROOT = Path(__file__).resolve().parents[3]
UTM = GeoRef(crs="EPSG:32633", transform=(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0), nodata=None)


def test_a_killed_vector_runs_temporary_is_removed_by_the_next_run(tmp_path) -> None:
    labels = np.zeros((64, 64), np.uint8)
    labels[8:24, 8:56] = 1
    labels[40:60, 20:30] = 1
    sink = CogSink(tmp_path / "m.tif", labels.shape, UTM, ["bg", "thing"])
    sink.write(Window((0, 0), labels.shape), labels, None)
    mask = sink.finalize()[0]
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "m.gpkg"
    script = textwrap.dedent(f"""
        import os, signal
        import pipeline.products.vector as v
        write = v._LayerWriter.write
        def write_then_die(self, rows):  # killed (SIGKILL, as by the OOM killer) with half a GeoPackage written
            write(self, rows)
            os.kill(os.getpid(), signal.SIGKILL)
        v._LayerWriter.write = write_then_die
        v.polygonize({str(mask)!r}, {str(out)!r}, block=16)
    """)
    killed = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120
    )
    assert killed.returncode == -9
    left = sorted(set(p.name for p in tmp_path.iterdir()) - set(before))
    assert any(n.endswith(".part.gpkg") for n in left) and not out.exists(), left

    result = polygonize(mask, out, classes=[1], block=16)
    assert result.features == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "m.gpkg"]), "the leftover is gone"
