"""A toy format registered only by tests: a (bands, rows, cols) ``.npy`` in, a (rows, cols) uint8 ``.npy`` out.

It proves that a format is one module and one ``register`` call: nothing in
``pipeline/`` knows it exists. Ray workers import it by its locator.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from tiling.core import Window
from tiling.errors import ConfigError, SourceOpenError
from tiling.formats.base import Format, NoOptions, Sink, SinkRequest, Source, SourceBase, empty_read
from tiling.formats.reference import ArrayTransform

LOCATOR = "tests.support.npy_format:FORMAT"


class NpySource(SourceBase):
    """A (bands, rows, cols) array in a ``.npy`` file, memory-mapped."""

    format = "npy"

    def __init__(self, path: Path, options: NoOptions) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceOpenError(f"{self.path}: no such file")
        self._arr = np.load(self.path, mmap_mode="r")
        if self._arr.ndim != 3:
            raise SourceOpenError(f"{self.path}: needs a (bands, rows, cols) array, got shape {self._arr.shape}")
        self.options = options
        self.count = int(self._arr.shape[0])
        self.shape = tuple(int(n) for n in self._arr.shape[1:])
        self.dtype = np.dtype(self._arr.dtype)
        self.block_shape = self.shape
        self.reference = ArrayTransform.identity(2)

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        data, valid, inside = empty_read(window, self.shape, self.count, self.dtype)
        if inside is not None:
            rel = inside.relative_to(window).to_slices()
            data[(slice(None), *rel)] = self._arr[(slice(None), *inside.to_slices())]
            valid[rel] = True
        return data, valid


class NpySink(Sink):
    """Labels as a (rows, cols) uint8 ``.npy``, published by rename."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        self.path = Path(path)
        self.shape = shape
        self.block = tuple(min(64, n) for n in shape)
        self._tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.part.npy")
        self._labels = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=np.uint8, shape=shape)
        self._closed = False

    @classmethod
    def for_source(cls, path: Path, source: Source, request: SinkRequest) -> NpySink:
        if len(source.shape) != 2:
            raise ConfigError(f"{path}: the npy sink writes 2-D masks only")
        return cls(path, tuple(source.shape))

    def write(self, window: Window, labels: np.ndarray, probs: np.ndarray | None) -> None:
        self._check_block(window, labels)
        self._labels[window.to_slices()] = labels

    def finalize(self) -> tuple[Path, ...]:
        self._begin_finalize()
        self._labels.flush()
        del self._labels
        os.replace(self._tmp, self.path)
        return (self.path,)

    def abort(self) -> None:
        self._closed = True
        self.__dict__.pop("_labels", None)
        self._tmp.unlink(missing_ok=True)


FORMAT = Format(
    name="npy",
    title="NumPy .npy",
    sniff=lambda path: path.suffix == ".npy",
    open_source=NpySource,
    sink=lambda: NpySink,
    suffixes=(".npy",),
    priority=5,
)
