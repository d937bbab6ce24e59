"""Inference on Ray: plan -> read (Ray Data read tasks) -> predict (actor pool) -> stitch -> sink."""

from __future__ import annotations

from pipeline.infer.run import USER_ERRORS, InferenceResult, infer_many, infer_scene, mask_path_for

__all__ = ["USER_ERRORS", "InferenceResult", "infer_many", "infer_scene", "mask_path_for"]
