"""Segmentation metrics from a confusion matrix: per-class IoU, mIoU and pixel accuracy.

The matrix is summed over batches and, in DDP, over workers (it is additive),
so the metrics of a split validation set equal those of the whole set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["ConfusionMatrix"]


class ConfusionMatrix:
    """Counts of (true class, predicted class) pixels.

    Args:
        classes: number of classes K.
        ignore_index: a true label that is not counted (nodata, ignored values).

    Attributes:
        matrix: (K, K) int64; ``matrix[t, p]`` pixels of true class t predicted as p.
    """

    def __init__(self, classes: int, ignore_index: int = 255) -> None:
        self.classes = classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((classes, classes), np.int64)

    def update(self, pred: np.ndarray, truth: np.ndarray) -> None:
        """Add a batch: ``pred`` and ``truth`` integer arrays of one shape.

        Truth equal to ``ignore_index`` (or outside [0, K)) is not counted.
        """
        pred = np.asarray(pred).ravel().astype(np.int64)
        truth = np.asarray(truth).ravel().astype(np.int64)
        keep = (truth != self.ignore_index) & (truth >= 0) & (truth < self.classes)
        idx = truth[keep] * self.classes + np.clip(pred[keep], 0, self.classes - 1)
        self.matrix += np.bincount(idx, minlength=self.classes**2).reshape(self.classes, self.classes)

    def add(self, other: ConfusionMatrix | np.ndarray) -> None:
        """Add another matrix (of another worker or scene)."""
        self.matrix += other.matrix if isinstance(other, ConfusionMatrix) else np.asarray(other, np.int64)

    @property
    def total(self) -> int:
        """Pixels counted."""
        return int(self.matrix.sum())

    def iou(self) -> np.ndarray:
        """(K,) intersection over union per class; NaN for a class absent from truth and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        """Mean IoU over the classes present in truth or prediction (NaN if none)."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        """Share of counted pixels predicted right (NaN if none counted)."""
        return float(np.trace(self.matrix) / self.total) if self.total else float("nan")

    def summary(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        """Plain-data metrics for ``metrics.json``: miou, pixel_accuracy, iou per class name, the matrix."""
        names = list(names or (f"class_{k}" for k in range(self.classes)))
        iou = self.iou()
        return {
            "miou": _num(self.miou()),
            "pixel_accuracy": _num(self.pixel_accuracy()),
            "iou": {n: _num(v) for n, v in zip(names, iou)},
            "confusion": self.matrix.tolist(),
        }


def _num(x: float) -> float | None:
    """JSON has no NaN: None stands for "undefined"."""
    return None if not np.isfinite(x) else round(float(x), 6)
