"""Inference on Ray: plan -> read (Ray Data read tasks) -> predict (actor pool) -> stitch -> sink.

The names below are imported on first use: Ray's read tasks and model
actors import ``pipeline.infer.datasource`` and ``pipeline.infer.predict``,
and must not pay for the driver's modules (Ray Data, rasterio, the
training code) on every worker start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from models.lazy import lazy_getattr

if TYPE_CHECKING:
    from pipeline.infer.run import USER_ERRORS, InferenceResult, infer_many, infer_scene, mask_path_for

__all__ = ["USER_ERRORS", "InferenceResult", "infer_many", "infer_scene", "mask_path_for"]


if not TYPE_CHECKING:  # mypy sees only the names imported above, so a wrong name fails the type check
    __getattr__ = lazy_getattr(
        __name__,
        {"pipeline.infer.run": __all__},  # every name lives there
    )
