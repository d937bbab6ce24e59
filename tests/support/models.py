"""Models that misbehave on purpose, for the reliability tests (importable by Ray workers)."""

from __future__ import annotations

import functools
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


class Gated(nn.Module):
    """A 1x1 conv whose forward passes wait for the test's permission: a run held where the test wants it.

    The test writes a number into ``gate`` (how many forward passes may run) or
    ``open`` (all of them); without the file, none may. A forward pass that must
    wait writes its number into ``gate + ".waiting"`` first, so the test knows the
    run is held there. Nothing depends on how fast the machine is.

    Args:
        conv: the convolution that computes the scores.
        gate: the file the test controls (see :class:`Gate`).
    """

    def __init__(self, conv: nn.Conv2d, gate: str) -> None:
        super().__init__()
        self.conv = conv
        self.gate = gate
        self.calls = 0

    def _allowed(self) -> float:
        try:
            text = Path(self.gate).read_text().strip()
        except FileNotFoundError:
            return 0
        return float("inf") if text == "open" else int(text or 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self._allowed() < self.calls:
            Path(self.gate + ".waiting").write_text(str(self.calls))
            while self._allowed() < self.calls:
                time.sleep(0.02)
        return self.conv(x)


class Gate:
    """The test's side of :class:`Gated`: allow forward passes, and see where the run is held."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "gate"
        self.waiting = folder / "gate.waiting"

    def model(self, conv: nn.Conv2d | None = None) -> Gated:
        """A gated 1x1 conv (``pointwise()`` by default) that obeys this gate."""
        return Gated(conv if conv is not None else pointwise(), str(self.path))

    def allow(self, calls: int) -> None:
        """Let the first ``calls`` forward passes run (all of them so far, in every actor)."""
        self.path.write_text(str(calls))

    def open(self) -> None:
        """Let every forward pass run."""
        self.path.write_text("open")

    def held_at(self) -> int:
        """The number of the forward pass that is waiting (0 if none has waited yet)."""
        try:
            return int(self.waiting.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def wait_until_held(self, at: int, timeout: float = 300) -> None:
        """Return once forward pass ``at`` (or a later one) waits at the gate.

        Raises:
            AssertionError: if none does within ``timeout`` seconds (the run died or never started).
        """
        deadline = time.monotonic() + timeout
        while self.held_at() < at:
            if time.monotonic() > deadline:
                raise AssertionError(f"no forward pass waited at the gate within {timeout:g} s")
            time.sleep(0.05)


def build_when_open(gate: str) -> nn.Module:
    """``pointwise()``, built only once the test writes ``open`` into ``gate``: a run held before it reads a tile.

    It writes ``gate + ".building"`` first, so the test knows the run waits there (see :meth:`Gate.builder`).
    """
    Path(gate + ".building").write_text("waiting")
    while not (Path(gate).exists() and Path(gate).read_text().strip() == "open"):
        time.sleep(0.02)
    return pointwise()


class BuildGate:
    """The test's side of :func:`build_when_open`: hold a training run while its worker builds the model."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "gate"
        self.building = folder / "gate.building"

    def builder(self) -> functools.partial[nn.Module]:
        """A picklable model builder for ``train(model_fn=...)`` that obeys this gate."""
        return functools.partial(build_when_open, str(self.path))

    def open(self) -> None:
        """Let the model be built."""
        self.path.write_text("open")

    def wait_until_held(self, timeout: float = 300) -> None:
        """Return once a worker waits to build the model.

        Raises:
            AssertionError: if none does within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while not self.building.exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"no worker waited to build its model within {timeout:g} s")
            time.sleep(0.05)
