"""The Sink interface every mask writer implements, and its shared checks.

A sink receives finished blocks from the :class:`~tiling.stitch.Stitcher`
(``write``), and makes the output appear under its final name only when it is
complete (``finalize``); ``abort`` removes every temporary file. Writing after
either raises :class:`SinkFinalizedError`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from tiling.errors import SinkError, SinkFinalizedError
from tiling.windows import Window

__all__ = ["Sink", "check_writable"]


def check_writable(path: Path, folder: bool = False) -> None:
    """Fail before any work if ``path`` cannot become the output.

    Args:
        path: the final output path.
        folder: the output is a folder (a Zarr store) rather than a file.

    Raises:
        SinkError: if the parent folder is missing, not a folder or not
            writable, or something of the other kind sits at ``path``.
    """
    parent = path.parent
    if not parent.exists():
        raise SinkError(f"{path}: cannot write output, folder {parent} does not exist")
    if not parent.is_dir():
        raise SinkError(f"{path}: cannot write output, {parent} is not a folder")
    if not os.access(parent, os.W_OK):
        raise SinkError(f"{path}: cannot write output, folder {parent} is not writable")
    if folder and path.exists() and not path.is_dir():
        raise SinkError(f"{path}: cannot write output, a file of that name exists")
    if not folder and path.is_dir():
        raise SinkError(f"{path}: cannot write output, a folder of that name exists")


class Sink(ABC):
    """Base of the COG, OME-Zarr and DICOM SEG writers.

    Subclasses set ``path``, ``shape`` (the scene's axes) and ``_closed``.
    """

    path: Path
    shape: tuple[int, ...]
    _closed: bool = False

    @abstractmethod
    def write(self, window: Window, labels: np.ndarray, probs: np.ndarray | None) -> None:
        """Write one finished block: labels (*window.shape) uint8, probs (K, *window.shape) or None."""

    @abstractmethod
    def finalize(self) -> Path:
        """Complete the output and move it to its final name; returns that path."""

    @abstractmethod
    def abort(self) -> None:
        """Remove every temporary file; the final name is never touched."""

    def _check_block(self, window: Window, labels: np.ndarray) -> None:
        """Refuse writes after finalize/abort, outside the scene, or of the wrong shape.

        Raises:
            SinkFinalizedError: after :meth:`finalize` or :meth:`abort`.
            SinkError: if the window leaves the scene or labels do not fit it.
        """
        if self._closed:
            raise SinkFinalizedError(f"{self.path}: written to after it was finalised")
        if window.ndim != len(self.shape) or any(
            s < 0 or e > n for s, e, n in zip(window.start, window.stop, self.shape)
        ):
            raise SinkError(f"{self.path}: window {window} is not inside the image of shape {self.shape}")
        if labels.shape != window.shape:
            raise SinkError(f"{self.path}: labels have shape {labels.shape}, window {window} needs {window.shape}")
