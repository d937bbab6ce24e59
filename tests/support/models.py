"""Models that misbehave on purpose, for the reliability tests (importable by Ray workers)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import torch
from torch import nn


def pointwise(bands: int = 3, classes: int = 2, seed: int = 0) -> nn.Conv2d:
    """A deterministic 1x1 convolution: cheap, and the same labels tiled as whole."""
    torch.manual_seed(seed)
    return nn.Conv2d(bands, classes, kernel_size=1)


class KillsItsProcess(nn.Module):
    """A 1x1 conv whose process dies with SIGKILL (like an out-of-memory kill) at a forward pass.

    Args:
        conv: the convolution that computes the scores.
        marker: a file; without it every actor dies at its ``nth`` forward. With it, only
            the first actor to reach its ``nth`` forward dies (it creates the file first),
            so a restarted actor finishes the run.
        nth: which forward pass (1-based) kills the process.
    """

    def __init__(self, conv: nn.Conv2d, marker: str | None = None, nth: int = 1) -> None:
        super().__init__()
        self.conv = conv
        self.marker = marker
        self.nth = nth
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.nth:
            if self.marker is None:
                os.kill(os.getpid(), signal.SIGKILL)
            else:
                try:
                    fd = os.open(self.marker, os.O_CREAT | os.O_EXCL)
                except FileExistsError:
                    pass
                else:
                    os.close(fd)
                    os.kill(os.getpid(), signal.SIGKILL)
        return self.conv(x)


class Hangs(nn.Module):
    """A model whose forward pass never returns (a stuck GPU, a deadlocked library)."""

    def __init__(self, bands: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(bands, 2, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        while True:
            time.sleep(60)


def marker_path(tmp: Path) -> str:
    """A marker file name in ``tmp`` that does not exist yet."""
    return str(tmp / "died-once")


class Slow(nn.Module):
    """A 1x1 conv that takes ``seconds`` per forward pass: a run long enough to be interrupted mid-way."""

    def __init__(self, conv: nn.Conv2d, seconds: float = 0.2) -> None:
        super().__init__()
        self.conv = conv
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return self.conv(x)
