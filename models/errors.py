"""Errors a user can cause in the model layer (bad weights file, wrong band count).

``models`` does not import ``tiling`` (the two stay independent), so it has
its own root, :class:`ModelError`; the CLI treats it like ``TilingError``.
"""

from __future__ import annotations

__all__ = ["BandCountError", "ModelError", "WeightsError"]


class ModelError(ValueError):
    """Root of the model layer's user-facing errors."""


class WeightsError(ModelError):
    """A weights file is missing, unreadable, or does not fit the model."""


class BandCountError(ModelError):
    """The image has a band count the model cannot take."""
