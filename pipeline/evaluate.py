"""Score a whole scene the way an analyst means accuracy: through the real inference pipeline.

The scene is tiled, predicted, blended and stitched by
:func:`pipeline.infer.infer_scene` exactly as ``tilewise infer`` does; the
written mask is then read back window by window next to the labels and
counted into one confusion matrix. Nodata and ignored labels never count.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from models.train import ConfusionMatrix, read_export
from pipeline.config import ModelConfig, PipelineConfig
from pipeline.infer import infer_scene
from pipeline.train.config import DataConfig
from pipeline.train.data import _open_scene
from tiling.core import Window, plan_windows
from tiling.errors import ConfigError
from tiling.formats import open_source

__all__ = ["evaluate_scene", "score_mask"]

log = logging.getLogger(__name__)


def score_mask(
    mask: str | Path,
    image: str | Path,
    labels: str | Path,
    data: DataConfig,
    region: Sequence[Window] | None = None,
    block: int = 512,
) -> ConfusionMatrix:
    """Count a written mask against the labels, block by block (or only inside ``region``).

    Args:
        mask: the predicted mask (any format tilewise writes; 255 = nodata).
        image: the scene (the labels are opened on its grid).
        labels: the labels, read as in training (label map, attribute...).
        data: classes, label map, ignore index and label options.
        region: windows to score (a held-out part); the whole scene when None.
        block: the reading block's side.
    """
    image_src, label_src, scene = _open_scene(data, str(image), str(labels))
    matrix = ConfusionMatrix(data.classes, data.ignore_index)
    try:
        with open_source(mask) as pred_src:
            windows = list(region) if region is not None else plan_windows(scene.shape, block, block, "pad")
            for w in windows:
                pred, pvalid = pred_src.read(w)
                raw, lvalid = label_src.read(w)
                raw = raw[0].astype(np.int64)
                truth = np.where(
                    (raw >= 0) & (raw < scene.lut.size), scene.lut[np.clip(raw, 0, scene.lut.size - 1)], -1
                )
                _, ivalid = image_src.read(w)
                keep = pvalid & lvalid & ivalid & (truth >= 0) & (pred[0] != 255)
                matrix.update(pred[0][keep], truth[keep])
    finally:
        image_src.close()
        label_src.close()
    return matrix


def evaluate_scene(
    weights: str | Path,
    image: str | Path,
    labels: str | Path,
    config: PipelineConfig | None = None,
    data: DataConfig | None = None,
    mask: str | Path | None = None,
    region: Sequence[Window] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Segment ``image`` with ``weights`` through the inference pipeline and score it against ``labels``.

    Args:
        weights: a ``model.pt`` that ``tilewise train`` exported.
        image: the scene.
        labels: its labels (any format with a label reader).
        config: inference options (tile, overlap, blend...); the export sets the model.
        data: how labels are read (label map, attribute); from the export when None.
        mask: keep the mask here; a temporary file when None.
        region: score only these windows (e.g. held-out blocks).
        progress: show the inference progress bar.

    Returns:
        ``miou``, ``pixel_accuracy``, ``iou`` per class, ``confusion``, ``pixels`` and ``mask`` (when kept).

    Raises:
        TilingError, ModelError: for bad input.
    """
    info = read_export(weights)
    if info is None:
        raise ConfigError(f"{weights}: has no training metadata; evaluate takes a model.pt that tilewise train wrote")
    cfg = config or PipelineConfig()
    cfg = replace(cfg, model=replace(cfg.model if cfg.model else ModelConfig(), weights=str(weights)))
    if data is None:
        data = DataConfig(
            image=(str(image),), labels=(str(labels),), classes=info.classes, class_names=tuple(info.class_names),
            label_map=",".join(f"{k}:{v if v != info.ignore_index else 'ignore'}" for k, v in info.label_map.items()) or None,
            ignore_index=info.ignore_index, bands=info.bands,
        )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="tilewise-eval-") as tmp:
        out = Path(mask) if mask is not None else Path(tmp) / "mask.tif"
        result = infer_scene(image, out, cfg, progress=progress)
        matrix = score_mask(result.mask, image, labels, data, region)
    summary = matrix.summary(list(info.class_names))
    summary["pixels"] = matrix.total
    summary["mask"] = str(result.mask) if mask is not None else None
    summary["tiles_per_second"] = round(result.tiles_per_second, 3)
    return summary
