"""The mission demo: a learnable synthetic scene, fine-tuned with DDP, evaluated on a held-out region.

:func:`make_scene` draws a georeferenced RGB scene whose four classes differ
in colour, texture and shape, the way they do from above: water (a
meandering river and a lake, smooth and dark blue), fields (rectangular
parcels with row stripes in several orientations), forest (blobby stands
with fine dark speckle) and roads (straight grey lines 20 px wide: thinner ones
are lost at the 16x output stride of DeepLabV3-MobileNetV3 trained for a few
minutes from scratch).
The truth raster has the same grid; a nodata wedge in one corner is ignored
in training and scoring.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from tiling.formats.geotiff.gdal import gdal_env

__all__ = ["CLASS_NAMES", "make_scene", "quicklook"]

#: UTM 33N, 3 m pixels: a PlanetScope-like grid near Vienna.
DEMO_CRS = "EPSG:32633"
DEMO_ORIGIN = (600_000.0, 5_350_000.0)
DEMO_PIXEL = 3.0
CLASS_NAMES = ("water", "fields", "forest", "roads")
#: Half the width of a road, in pixels (60 m wide at 3 m: a highway with its verges).
ROAD_HALF_WIDTH = 10.0
WATER, FIELDS, FOREST, ROADS = range(4)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: bilinear upsampling of a coarse random grid."""
    coarse = rng.random((cells + 1, cells + 1))
    r = np.linspace(0, cells, shape[0])
    c = np.linspace(0, cells, shape[1])
    r0, c0 = np.minimum(r.astype(int), cells - 1), np.minimum(c.astype(int), cells - 1)
    fr, fc = (r - r0)[:, None], (c - c0)[None, :]
    a = coarse[r0][:, c0]
    b = coarse[r0][:, c0 + 1]
    d = coarse[r0 + 1][:, c0]
    e = coarse[r0 + 1][:, c0 + 1]
    out: np.ndarray = (a * (1 - fr) * (1 - fc) + b * (1 - fr) * fc + d * fr * (1 - fc) + e * fr * fc).astype(np.float32)
    return out


def _classes(rng: np.random.Generator, size: int) -> np.ndarray:
    """The truth: fields everywhere, then forest stands, water, roads on top."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    truth = np.full((size, size), FIELDS, np.uint8)
    truth[_smooth_noise(rng, (size, size), max(4, size // 128)) > 0.62] = FOREST
    river = np.abs(cols - (size * 0.35 + size * 0.1 * np.sin(rows / size * 7.0))) < size * 0.025
    lake = (rows - size * 0.7) ** 2 / (size * 0.12) ** 2 + (cols - size * 0.75) ** 2 / (size * 0.16) ** 2 < 1
    truth[river | lake] = WATER
    for _ in range(3):  # straight roads across the scene, over everything
        angle, offset = rng.uniform(0, np.pi), rng.uniform(0.2, 0.8) * size
        dist = np.abs((cols - size / 2) * np.cos(angle) + (rows - size / 2) * np.sin(angle) - (offset - size / 2))
        truth[dist < ROAD_HALF_WIDTH] = ROADS
    return truth


def _render(rng: np.random.Generator, truth: np.ndarray) -> np.ndarray:
    """RGB float (3, n, n): a colour and a texture per class, plus sensor noise."""
    size = truth.shape[0]
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    rgb = np.zeros((3, size, size), np.float32)
    # fields: parcels of 64-128 px, each with its own crop colour and row direction
    parcel = 96
    pid = (rows // parcel).astype(int) * 1000 + (cols // parcel).astype(int)
    ids, inverse = np.unique(pid, return_inverse=True)
    hue = rng.uniform(0, 1, len(ids))[inverse].reshape(size, size)
    angle = rng.choice([0.0, np.pi / 2, np.pi / 4], len(ids))[inverse].reshape(size, size)
    stripes = 0.5 + 0.5 * np.sin((cols * np.cos(angle) + rows * np.sin(angle)) * 2 * np.pi / 6)
    field = np.stack([150 + 50 * hue, 140 + 30 * (1 - hue), 70 + 20 * hue]) + 18 * stripes
    forest = np.stack([35.0, 85.0, 40.0])[:, None, None] + 25 * (rng.random((1, size, size)) > 0.7)
    water = np.stack([25.0, 55.0, 110.0])[:, None, None] + 4 * _smooth_noise(rng, (size, size), 16)
    road = np.full((3, size, size), 125.0)
    for k, layer in ((FIELDS, field), (FOREST, forest), (WATER, water), (ROADS, road)):
        rgb = np.where(truth == k, layer, rgb)
    rgb += 15 * (_smooth_noise(rng, (size, size), 6) - 0.5)  # illumination
    rgb += rng.normal(0, 5, rgb.shape)
    return rgb


def make_scene(path: str | Path, size: int = 1024, seed: int = 0, truth_path: str | Path | None = None) -> Path:
    """Write a 3-band uint8 RGB scene (UTM 33N, nodata 0 in a corner wedge), and its truth.

    Args:
        path: the scene GeoTIFF.
        size: side in pixels.
        seed: the random layout.
        truth_path: where to write the class raster (uint8, classes 0..3 as
            :data:`CLASS_NAMES`, 255 under the nodata wedge); ``<path>_truth.tif`` when None.

    Returns:
        The scene's path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth = _classes(rng, size)
    img = np.clip(_render(rng, truth), 1, 255).astype(np.uint8)
    rows, cols = np.mgrid[0:size, 0:size]
    wedge = rows + cols < size * 0.15  # nodata, like the edge of a satellite swath
    img[:, wedge] = 0
    truth[wedge] = 255
    profile = dict(
        driver="GTiff", height=size, width=size, crs=DEMO_CRS,
        transform=Affine(DEMO_PIXEL, 0, DEMO_ORIGIN[0], 0, -DEMO_PIXEL, DEMO_ORIGIN[1]),
        tiled=True, blockxsize=256, blockysize=256, compress="deflate",
    )  # fmt: skip
    truth_path = Path(truth_path) if truth_path else path.with_name(f"{path.stem}_truth.tif")
    with gdal_env():
        with rasterio.open(path, "w", count=3, dtype="uint8", nodata=0, photometric="RGB", **profile) as dst:
            dst.write(img)
        with rasterio.open(truth_path, "w", count=1, dtype="uint8", nodata=255, **profile) as dst:
            dst.write(truth[None])
    return path


def quicklook(scene: Path, mask: Path, truth: Path, out: Path, width: int = 1536) -> Path:
    """A side-by-side PNG: scene | predicted mask | truth, classes in the masks' palette."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from tiling.core.labels import class_color

    with rasterio.open(scene) as s, rasterio.open(mask) as m, rasterio.open(truth) as t:
        step = max(1, s.width // (width // 3))
        img = s.read(out_shape=(3, s.height // step, s.width // step)).transpose(1, 2, 0)
        pred = m.read(1, out_shape=(m.height // step, m.width // step))
        true = t.read(1, out_shape=(t.height // step, t.width // step))
    cmap = ListedColormap([np.array(class_color(k)) / 255 for k in range(len(CLASS_NAMES))])
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4))
    for ax, data, title in zip(axes, (img, pred, true), ("scene", "mask (fine-tuned model)", "truth")):
        if data.ndim == 2:
            data = np.ma.masked_equal(data, 255)
            ax.imshow(data, cmap=cmap, vmin=-0.5, vmax=len(CLASS_NAMES) - 0.5, interpolation="nearest")
        else:
            ax.imshow(data)
        ax.set_title(title)
        ax.axis("off")
    from matplotlib.patches import Rectangle

    handles = [Rectangle((0, 0), 1, 1, color=cmap(k)) for k in range(len(CLASS_NAMES))]
    fig.legend(handles, CLASS_NAMES, loc="lower center", ncol=len(CLASS_NAMES))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


#: The demo's training recipe, measured on a 2-core CPU without native bf16 (see the README).
# From random init what counts is the number of updates: small tiles and batches give many cheap ones.
DEMO_TILE = 96
DEMO_BLOCK = 192  # split blocks of 2x2 tiles; a quarter of them held out
DEMO_LR = 2e-3  # from random init; the card's 1e-5..1e-4 is for fine-tuning pretrained weights
DEMO_EPOCHS = 20
DEMO_SAMPLES = 96  # class-balanced random tiles per epoch: 12 updates of 2 workers x 4 tiles
DEMO_BATCH = 4
DEMO_INFER_TILE = 192  # inference tiles of twice the training tile, overlapping by a quarter


def run_demo(
    workdir: str | Path, size: int = 768, epochs: int | None = None, workers: int = 2, progress: bool = True
) -> dict[str, object]:
    """Generate, fine-tune (DDP), evaluate the held-out region, segment the scene, draw the quicklook.

    Returns:
        Paths (scene, truth, mask, quicklook, model) and figures (val_miou,
        heldout_miou, heldout_accuracy, scene_miou, train_seconds).
    """
    import shutil
    import time

    from pipeline.config import ModelConfig, PipelineConfig, TilingConfig
    from pipeline.evaluate import score_mask
    from pipeline.infer import infer_scene
    from pipeline.train import DataConfig, ModelTrainConfig, OptimConfig, RunTrainConfig, TrainConfig, train

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    scene = make_scene(workdir / "scene.tif", size=size, truth_path=workdir / "truth.tif")
    truth = workdir / "truth.tif"
    run_dir = workdir / "run"
    if (run_dir / "checkpoint.pt").exists():  # a previous demo's run: the demo owns this folder
        shutil.rmtree(run_dir)
    data = DataConfig(
        image=(str(scene),), labels=(str(truth),), classes=4, class_names=CLASS_NAMES, tile=DEMO_TILE,
        block=DEMO_BLOCK, val_fraction=0.25, windows="random", samples=DEMO_SAMPLES, balanced=True,
    )  # fmt: skip
    cfg = TrainConfig(
        data=data,
        model=ModelTrainConfig(backbone="mobilenet_v3_large", init="none"),
        optim=OptimConfig(lr=DEMO_LR, batch_size=DEMO_BATCH, epochs=epochs or DEMO_EPOCHS, force=True),
        run=RunTrainConfig(out=str(run_dir), num_workers=workers, augment="none"),
    )
    t0 = time.perf_counter()
    result = train(cfg, progress=progress)
    train_seconds = time.perf_counter() - t0
    mask = workdir / "mask.tif"
    infer_cfg = PipelineConfig(TilingConfig(tile=DEMO_INFER_TILE, overlap=0.25), ModelConfig(weights=str(result.model)))
    inferred = infer_scene(scene, mask, infer_cfg, progress=progress)
    region = [w for _, w in result.val_windows]
    held = score_mask(mask, scene, truth, data, region)
    whole = score_mask(mask, scene, truth, data)
    look = quicklook(scene, mask, truth, workdir / "quicklook.png")
    return {
        "scene": scene, "truth": truth, "mask": mask, "quicklook": look, "model": result.model,
        "val_miou": result.history[-1]["miou"], "heldout_miou": held.miou(),
        "heldout_accuracy": held.pixel_accuracy(), "scene_miou": whole.miou(), "train_seconds": train_seconds,
        "epochs": cfg.optim.epochs, "workers": workers, "backbone": "DeepLabV3-MobileNetV3-Large",
        "tile": DEMO_TILE, "lr": DEMO_LR, "train_precision": result.history[-1].get("precision", ""),
        "infer_precision": inferred.precision,
    }  # fmt: skip
