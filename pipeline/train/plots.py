"""The training figures: loss and mIoU per epoch, and the last validation confusion matrix.

Each PNG names tilewise as its ``Software``, so a later run knows it may replace it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from tiling.version import mark

__all__ = ["plot_confusion", "plot_curves"]


def plot_curves(history: Sequence[dict[str, Any]], path: Path) -> Path:
    """Training and validation loss, validation mIoU and pixel accuracy against the epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    a.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation loss")
    a.set_xlabel("epoch")
    a.legend()
    b.plot(epochs, [h["miou"] or 0 for h in history], "o-", label="validation mIoU")
    b.plot(epochs, [h["pixel_accuracy"] or 0 for h in history], "o-", label="pixel accuracy")
    b.set_ylim(0, 1)
    b.set_xlabel("epoch")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90, format="png", metadata={"Software": mark()})
    plt.close(fig)
    return path


def plot_confusion(matrix: Sequence[Sequence[int]], names: Sequence[str], path: Path) -> Path:
    """The confusion matrix, each row (true class) normalised to 1."""
    m = np.asarray(matrix, float)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 1.2 * len(names) + 1.5))
    ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=90, format="png", metadata={"Software": mark()})
    plt.close(fig)
    return path
