"""What an exported training run tells inference: classes, names, bands, backbone, normalisation.

``tilewise train`` writes ``model.pt`` with the metadata of
:class:`models.train.ExportInfo`. Inference with ``--weights model.pt`` must
feed the model inputs normalised exactly as in training, so it uses the
stored per-band mean/std instead of estimating them from each scene.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from models import Normalization
from models.train import read_export
from pipeline.config import PipelineConfig

__all__ = ["apply_export"]

log = logging.getLogger(__name__)


def apply_export(cfg: PipelineConfig) -> tuple[PipelineConfig, Normalization | None]:
    """``cfg`` with the export's classes, class names, backbone and bands, and its normalisation.

    A weights file without tilewise metadata (torchvision's) leaves ``cfg``
    as it is and returns no normalisation (inference then estimates one).
    Bands given explicitly in ``cfg`` are kept.
    """
    if cfg.model.weights is None:
        return cfg, None
    info = read_export(cfg.model.weights)
    if info is None:
        return cfg, None
    backbone = cfg.model.backbone if info.backbone == "custom" else info.backbone
    model = replace(cfg.model, classes=info.classes, class_names=tuple(info.class_names), backbone=backbone)
    bands = cfg.input.bands if cfg.input.bands is not None else info.bands
    window = cfg.input.window or info.extra.get("window")
    log.info(
        "%s: trained model: %d classes (%s), backbone %s, training normalisation",
        cfg.model.weights, info.classes, ", ".join(info.class_names), backbone,
    )  # fmt: skip
    return replace(cfg, model=model, input=replace(cfg.input, bands=bands, window=window)).validate(), Normalization(
        tuple(info.mean), tuple(info.std)
    )
