"""Small segmentation networks for training tests, importable in Ray workers."""

from __future__ import annotations

from torch import nn


def tiny_net(bands: int = 3, classes: int = 2) -> nn.Module:
    """Two convolutions, no BatchNorm and no dropout: DDP on 2 workers with batch b must equal
    1 worker with batch 2b exactly (BatchNorm would normalise each worker's half separately)."""
    return nn.Sequential(nn.Conv2d(bands, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, classes, 1))


def unbuildable() -> nn.Module:
    """A model builder that fails on the worker, as a run's first epoch can (a user error, in one line)."""
    from models.errors import ModelError

    raise ModelError("this network cannot be built here")
