"""The training loss: per-pixel cross-entropy in which ignored pixels never count."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.spec import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "segmentation_loss"]


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy over the pixels whose label is not ``ignore_index``.

    Args:
        logits: (B, K, H, W) class scores (any float dtype; computed in fp32).
        target: (B, H, W) integer labels in [0, K) or ``ignore_index``.
        ignore_index: the label that does not count.
        weight: (K,) per-class weights (rare classes heavier), or None; the
            mean is then weighted: sum(w[y] * loss) / sum(w[y]).

    Returns:
        A scalar. A batch without a single counted pixel gives 0 with a
        gradient of 0 (``F.cross_entropy``'s mean would give NaN there).
    """
    target = target.long()
    total = F.cross_entropy(logits.float(), target, weight=weight, ignore_index=ignore_index, reduction="sum")
    keep = target != ignore_index
    if weight is None:
        return total / keep.sum().clamp(min=1)
    return total / weight[target[keep]].sum().clamp(min=1e-12)
