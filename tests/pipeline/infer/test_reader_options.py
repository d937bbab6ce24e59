"""Reader options of issue 7 reach the Ray workers: ``complex`` and ``allow_drivers`` travel in the
source spec, so the read tasks open and convert exactly as the driver did."""

from __future__ import annotations

import numpy as np
import rasterio
import torch

from models import Normalization
from pipeline.config import InputConfig, ModelConfig, PipelineConfig, TilingConfig
from pipeline.infer import infer_scene
from tests.conftest import write_scene
from tests.support import hostile


def threshold_model() -> torch.nn.Module:
    """One band in, two classes out: class 0 where the normalised value is positive."""
    conv = torch.nn.Conv2d(1, 2, kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1))
        conv.bias.zero_()
    return conv


def test_a_complex_scene_behind_an_allowed_vrt_is_read_as_amplitude_in_the_workers(ray_session, tmp_path) -> None:
    rng = np.random.default_rng(0)
    amplitude = rng.uniform(0, 10, (1, 48, 40))
    z = (amplitude * np.exp(1j * rng.uniform(-np.pi, np.pi, amplitude.shape))).astype(np.complex64)
    sar = write_scene(tmp_path / "sar.tif", z, block=16)
    vrt = hostile.vrt_over(tmp_path / "sar.vrt", sar, (48, 40), "CFloat32")
    cfg = PipelineConfig(
        tiling=TilingConfig(tile=32, blend="center"),
        model=ModelConfig(classes=2, precision="fp32", channels_last=False),
        input=InputConfig(allow_drivers=("VRT",), complex="abs"),
        allow_no_crs=True,
    )
    out = tmp_path / "mask.tif"
    infer_scene(vrt, out, cfg, threshold_model(), Normalization((5.0,), (1.0,)), progress=False)
    with rasterio.open(out) as m:
        np.testing.assert_array_equal(m.read(1), np.where(np.abs(z[0]) > 5, 0, 1))
