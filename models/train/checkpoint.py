"""Training checkpoints: everything needed to continue exactly where a run stopped.

A checkpoint holds the model, optimizer, LR scheduler and gradient scaler
states, the epoch it completed, the metrics history and the random number
generators' states (Python, numpy, torch CPU and CUDA), and in ``extra``
what the run was (its data and model, so a resume with other data is refused).
It is written with ``torch.save`` under a temporary name and renamed, so a
killed run never leaves half a checkpoint, and a failed write removes its
temporary file; it is read back with ``weights_only=True``.
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

__all__ = [
    "CHECKPOINT_KEYS",
    "get_rng_state",
    "is_checkpoint",
    "load_checkpoint",
    "save_atomically",
    "save_checkpoint",
    "set_rng_state",
    "temp_path",
    "unwrap",
]

#: What every checkpoint holds (and a file must hold to be one).
CHECKPOINT_KEYS = frozenset({"model", "optimizer", "epoch", "rng"})


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
    save_atomically(state, path)
    return path


def temp_path(path: Path) -> Path:
    """The hidden name ``path`` is written under before it is renamed into place: ``.<name>.tmp<pid>``."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def save_atomically(obj: Any, path: Path) -> None:
    """``torch.save`` under :func:`temp_path`, then rename; a failed write (a full disk) leaves no file behind.

    Raises:
        OSError, RuntimeError: what the write raised (torch reports a short write as a RuntimeError).
    """
    tmp = temp_path(path)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def is_checkpoint(obj: Any) -> bool:
    """Whether a loaded object is a training checkpoint :func:`save_checkpoint` wrote."""
    return isinstance(obj, dict) and CHECKPOINT_KEYS <= set(obj)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint :func:`save_checkpoint` wrote.

    Raises:
        WeightsError: if the file is missing or is not a tilewise training checkpoint.
    """
    path = Path(path)
    state = read_torch_file(path, "checkpoint not found; --resume takes a checkpoint.pt a run wrote", "checkpoint")
    if not is_checkpoint(state):
        raise WeightsError(f"{path}: not a tilewise training checkpoint (no optimizer/epoch/rng state)")
    return state
