"""Training checkpoints: everything needed to continue exactly where a run stopped.

A checkpoint holds the model, optimizer, LR scheduler and gradient scaler
states, the epoch it completed, the metrics history and the random number
generators' states (Python, numpy, torch CPU and CUDA). It is written with
``torch.save`` under a temporary name and renamed, so a killed run never
leaves half a checkpoint; it is read back with ``weights_only=True``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.deeplab import read_torch_file
from models.errors import WeightsError

__all__ = ["get_rng_state", "load_checkpoint", "save_checkpoint", "set_rng_state", "unwrap"]


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel (or similar) wrapper."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


def get_rng_state() -> dict[str, Any]:
    """Python, numpy and torch generator states as plain data and tensors (safe to load)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss), "kind": str(kind)},
        "torch": torch.get_rng_state(),
    }  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    epoch: int,
    history: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint after ``epoch`` (1-based count of completed epochs) atomically.

    Returns:
        The path written.
    """
    path = Path(path)
    state = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": int(epoch),
        "history": history,
        "rng": get_rng_state(),
        "extra": extra or {},
    }
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint :func:`save_checkpoint` wrote.

    Raises:
        WeightsError: if the file is missing or is not a tilewise training checkpoint.
    """
    path = Path(path)
    state = read_torch_file(path, "checkpoint not found; --resume takes a checkpoint.pt a run wrote", "checkpoint")
    if not isinstance(state, dict) or not {"model", "optimizer", "epoch", "rng"} <= set(state):
        raise WeightsError(f"{path}: not a tilewise training checkpoint (no optimizer/epoch/rng state)")
    return state
