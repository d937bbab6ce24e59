"""Score a whole scene the way an analyst means accuracy: through the real inference pipeline.

The scene is tiled, predicted, blended and stitched by
:func:`pipeline.infer.infer_scene` exactly as ``tilewise infer`` does; the
written mask is then read back window by window next to the labels and
counted into one confusion matrix. Nodata and ignored labels never count.

What a run writes (the kept mask, the scores as JSON) is checked before any
work: never over an input, never into a missing folder, never over a file
tilewise did not write.
"""

from __future__ import annotations

import json
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
from tiling.errors import ConfigError, SinkError
from tiling.formats import open_source
from tiling.formats.base import check_writable, sink_error, staged_file
from tiling.version import mark

__all__ = ["check_outputs", "evaluate_scene", "score_mask", "write_scores"]

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
    check_outputs({"--mask": mask}, {"image": image, "labels": labels, "weights": weights})
    info = read_export(weights)
    if info is None:
        raise ConfigError(f"{weights}: has no training metadata; evaluate takes a model.pt that tilewise train wrote")
    cfg = config or PipelineConfig()
    # a mask kept here replaces only a mask tilewise wrote (the inference's own check), like the scores
    cfg = replace(cfg, model=replace(cfg.model if cfg.model else ModelConfig(), weights=str(weights)), overwrite=True)
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


def _same(a: Path, b: Path) -> bool:
    """Whether two paths name the same file or folder (through links, or as one name)."""
    try:
        if a.exists() and b.exists():
            return a.samefile(b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _is_scores(path: Path) -> bool:
    """Whether ``path`` is a scores file tilewise wrote (its ``tilewise`` key)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and str(data.get("tilewise", "")).startswith("tilewise")


def check_outputs(outputs: dict[str, str | Path | None], inputs: dict[str, str | Path]) -> None:
    """Refuse, before any work, an output that is an input, that has no folder, or that tilewise did not write.

    Args:
        outputs: by flag (``--json``, ``--mask``), the paths to write (None: not asked for).
        inputs: by role (image, labels, weights), the paths read.

    Raises:
        ConfigError: if an output is an input, or two outputs are one path.
        SinkError: if an output's folder is missing, or a scores file exists that tilewise did not write
            (masks are checked likewise by the inference's planning).
    """
    given = {flag: Path(p) for flag, p in outputs.items() if p is not None}
    for flag, path in given.items():
        for role, source in inputs.items():
            if _same(path, Path(source)):
                raise ConfigError(f"{path}: {flag} is the {role} this run reads; choose another path for {flag}")
        for other, path2 in given.items():
            if other != flag and _same(path, path2):
                raise ConfigError(f"{path}: {flag} and {other} name the same file; give them different paths")
        check_writable(path, folder=path.suffix.lower() == ".zarr")
        if flag == "--json" and (path.exists() or path.is_symlink()) and (path.is_symlink() or not _is_scores(path)):
            raise SinkError(
                f"{path}: exists and was not written by tilewise, so it is never replaced; move it away or "
                "choose another --json"
            )


def write_scores(path: str | Path, scores: dict[str, Any]) -> Path:
    """Write the scores as JSON with tilewise's mark, under a temporary name renamed into place.

    Raises:
        SinkError: if the file cannot be written (no temporary file is left).
    """
    path = Path(path)
    try:
        with staged_file(path, ".tmp") as tmp:
            tmp.write_text(json.dumps({"tilewise": mark(), **scores}, indent=2), encoding="utf-8")
    except OSError as e:
        raise sink_error(path, e) from e
    return path
