"""End-to-end inference through Ray Data: seam-free output, georeferencing, nodata."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import replace

import numpy as np
import pytest
import rasterio
import torch

from models import Normalization, Predictor
from pipeline.config import InferenceConfig, ModelConfig, PipelineConfig, TilingConfig
from pipeline.infer import infer_scene
from pipeline.infer.engine import run_plans
from pipeline.infer.journal import JOURNAL_SUFFIX, BlockJournal, JournalPlan, adopt_journal
from pipeline.infer.plan import plan_scene
from tests.conftest import write_scene
from tests.support.models import Slow
from tiling import LABEL_NODATA
from tiling.core.windows import Window
from tiling.formats.base import temp_name
from tiling.formats.geotiff.writer import probs_path_for

NORM = Normalization(mean=(128.0, 128.0, 128.0), std=(64.0, 64.0, 64.0))


def pixel_model(classes: int = 3) -> torch.nn.Module:
    """A 1x1 convolution: translation-equivariant per pixel, so tiling must not show."""
    torch.manual_seed(3)
    return torch.nn.Conv2d(3, classes, kernel_size=1)


def whole_image(model: torch.nn.Module, path) -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(path) as ds:
        img, valid = ds.read(), ds.dataset_mask() > 0
    probs = Predictor(model, NORM, precision="fp32", channels_last=False)(img[None], valid[None])[0]
    return probs, valid


def config(blend: str, tile: int = 64, overlap: float = 0.25, **kw) -> PipelineConfig:
    return PipelineConfig(
        tiling=TilingConfig(tile=tile, overlap=overlap, blend=blend),
        model=ModelConfig(classes=3, precision="fp32", channels_last=False),
        inference=InferenceConfig(batch=4),
        save_probs=True,
        **kw,
    )


@pytest.mark.parametrize(
    "blend, rows, cols",
    [("center", 203, 170), ("gaussian", 203, 170), ("mean", 130, 97), ("center", 40, 50)],
)
def test_pipeline_output_equals_whole_image_prediction(ray_session, tmp_path, blend, rows, cols) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(1, 255, (3, rows, cols), dtype=np.uint8)
    data[:, : rows // 3, : cols // 3] = 0  # a nodata corner (all bands 0)
    src = write_scene(tmp_path / "s.tif", data, nodata=0, block=32)
    model = pixel_model()
    out = tmp_path / "mask.tif"
    result = infer_scene(src, out, config(blend), model=model, normalization=NORM, progress=False)
    probs, valid = whole_image(model, src)
    with rasterio.open(out) as ds:
        labels = ds.read(1)
    assert ((labels == LABEL_NODATA) == ~valid).all()
    expected = probs.argmax(0)
    if blend == "center":
        np.testing.assert_array_equal(labels[valid], expected[valid])
    else:  # float tolerance: only near-ties may flip
        top2 = np.sort(probs, axis=0)[-2:]
        decided = valid & (top2[1] - top2[0] > 1e-4)
        np.testing.assert_array_equal(labels[decided], expected[decided])
    with rasterio.open(probs_path_for(out)) as ds:
        stored = ds.read().astype(np.float32) / 255
    assert np.abs(stored[:, valid] - probs[:, valid]).max() <= 0.5 / 255 + 1e-4
    assert result.tiles >= 1 and result.mask == out


def test_real_scene_keeps_georeferencing_and_nodata(ray_session, tmp_path, rgb_byte) -> None:
    out = tmp_path / "m.tif"
    cfg = PipelineConfig(
        TilingConfig(tile=128), ModelConfig(backbone="resnet50", classes=3, random_weights=0), InferenceConfig(batch=8)
    )
    result = infer_scene(rgb_byte, out, cfg, progress=False)
    with rasterio.open(rgb_byte) as src, rasterio.open(out) as m:
        assert (m.crs, m.transform, m.width, m.height) == (src.crs, src.transform, src.width, src.height)
        labels = m.read(1)
        valid = src.dataset_mask() > 0
        assert ((labels == 255) == ~valid).all()
        assert set(np.unique(labels[valid])) <= {0, 1, 2}
    assert result.skipped > 0  # RGB.byte.tif has tiles with no valid pixel at all


def test_user_model_with_wrong_bands_fails_before_any_output(ray_session, tmp_path, scene_factory) -> None:
    from models import BandCountError

    src = scene_factory(64, 64, bands=4)
    with pytest.raises(BandCountError, match="4 band"):
        infer_scene(src, tmp_path / "m.tif", config("mean"), model=pixel_model(), progress=False)
    assert not (tmp_path / "m.tif").exists()


def test_the_result_says_how_long_the_model_took(ray_session, tmp_path) -> None:
    """``model_seconds`` adds up the model actor's time per batch: at least the model's own, at most the run's."""
    data = np.random.default_rng(1).integers(1, 255, (3, 100, 100), dtype=np.uint8)
    src = write_scene(tmp_path / "s.tif", data, block=32)
    result = infer_scene(
        src, tmp_path / "m.tif", config("center"), model=Slow(pixel_model(), 0.2), normalization=NORM, progress=False
    )
    batches = -(-(result.tiles - result.skipped) // 4)
    assert result.tiles == 9 and batches == 3  # 100 px in 64 px tiles with a stride of 48: 3 x 3 tiles
    assert 0.2 * batches <= result.model_seconds < result.seconds


def test_a_scene_whose_journal_holds_every_block_is_published_from_it(ray_session, tmp_path) -> None:
    """A run killed after its last block but before publishing: the next run runs no tile and publishes the journal."""
    data = np.random.default_rng(2).integers(1, 255, (3, 100, 100), dtype=np.uint8)
    src, out = write_scene(tmp_path / "s.tif", data, block=32), tmp_path / "m.tif"
    cfg = config("center")
    plan = plan_scene(0, src, out, cfg, NORM, pixel_model())
    gone = subprocess.Popen(["true"])  # the killed run: a process of this host that no longer exists
    gone.wait()
    tied = JournalPlan.of(plan.grid, plan.block, 3, save_probs=True, context={})
    mine = temp_name(out, JOURNAL_SUFFIX)
    journal = BlockJournal(mine.with_name(re.sub(rf"-{os.getpid()}-", f"-{gone.pid}-", mine.name)), tied)
    rows, cols = plan.grid.shape
    for r in range(0, rows, plan.block[0]):
        for c in range(0, cols, plan.block[1]):
            shape = (min(plan.block[0], rows - r), min(plan.block[1], cols - c))
            journal.append(Window((r, c), shape), np.full(shape, 1, np.uint8), np.full((3, *shape), 0.5, np.float32))
    journal.close()
    resume = adopt_journal(out, tied)
    assert resume is not None and len(resume.todo) == 0
    (result,) = run_plans([replace(plan, journal=tied, resume=resume)], cfg, progress=False).values()
    assert result.model_seconds == 0.0 and result.tiles == 9, result
    with rasterio.open(out) as ds:
        assert (ds.read(1) == 1).all()
