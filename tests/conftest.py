"""Session fixtures: one local Ray for the whole suite, paths to the shared samples,
and small scenes generated on the fly."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import settings

# CI has two slow cores: no per-example deadline, and a bounded example count.
settings.register_profile("tilewise", deadline=None, max_examples=60, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "tilewise"))

#: Real GeoTIFF, DICOM and Zarr samples live beside the checkout (see SOURCES.md).
SHARED = Path(os.environ.get("TILEWISE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"shared sample data not found at {SHARED}; set TILEWISE_SHARED_DATA")
    return SHARED


@pytest.fixture(scope="session")
def rgb_byte(shared_data: Path) -> Path:
    """rasterio's RGB.byte.tif: 791x718, 3 bands uint8, nodata 0, UTM 18N."""
    return shared_data / "geotiff" / "rasterio" / "RGB.byte.tif"


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray with 2 CPUs for every test that needs it."""
    import ray

    from pipeline import ray_env

    # the same start-up the CLI uses (it may already have begun in the background)
    ray_env.ensure_ray(num_cpus=2)
    yield ray
    ray_env.shutdown()
    ray.shutdown()


def write_scene(
    path: Path,
    data: np.ndarray,
    nodata: float | None = None,
    crs: str | None = "EPSG:32633",
    block: int | None = 64,
    **extra,
) -> Path:
    """Write (bands, rows, cols) ``data`` as a GeoTIFF with 10 m pixels."""
    profile = dict(
        driver="GTiff", count=data.shape[0], height=data.shape[1], width=data.shape[2], dtype=data.dtype,
        nodata=nodata, crs=crs, transform=Affine(10, 0, 500_000, 0, -10, 4_000_000) if crs else None,
    )  # fmt: skip
    if block:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    profile.update(extra)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


@pytest.fixture
def scene_factory(tmp_path: Path):
    """Make random uint8 scenes: ``scene_factory(rows, cols, bands=3, seed=0)``."""

    def make(rows: int, cols: int, bands: int = 3, seed: int = 0, **kw) -> Path:
        rng = np.random.default_rng(seed)
        data = rng.integers(1, 255, (bands, rows, cols), dtype=np.uint8)
        return write_scene(tmp_path / f"scene_{rows}x{cols}_{bands}_{seed}.tif", data, **kw)

    return make


def digest(path: Path) -> str:
    """SHA-256 over a file, or over every file of a folder with its relative name."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path.parent)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()
