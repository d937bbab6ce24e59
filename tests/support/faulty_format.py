"""A toy format whose code fails on purpose, where its file's name says: a plugin with a bug, for batch tests.

Files are ``.fty``: a (bands, rows, cols) ``.npy`` array under another
suffix, read and written as :mod:`tests.support.npy_format` does. A file
whose stem starts with one of these words fails there, with an error that
is no ``TilingError`` (a bug, not bad input):

- ``sniff``: recognising the file (while a batch looks at its scenes);
- ``plan``: making its sink (while the scene is planned);
- ``write``: taking a finished block (while the scene is stitched);
- ``finalize``: publishing the mask;
- ``sidecar``: publishing, after a sidecar was staged beside the mask.

Ray workers import it by its locator, like any registered format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.support.npy_format import NpySink, NpySource
from tiling.core import Window
from tiling.formats.base import Format, Sink, SinkRequest, Source, StagedFiles

LOCATOR = "tests.support.faulty_format:FORMAT"


def _stage(path: Path) -> str:
    return Path(path).name.split("_mask")[0].split(".")[0]


def write_fty(path: Path, data: np.ndarray) -> Path:
    """Save ``data`` (bands, rows, cols) as a ``.fty`` file."""
    with open(path, "wb") as f:
        np.save(f, data)
    return path


def _sniff(path: Path) -> bool:
    if path.suffix != ".fty":
        return False
    if _stage(path) == "sniff":
        raise RuntimeError(f"the plugin cannot tell what {path.name} is")
    return True


class FaultySource(NpySource):
    """The npy reader, under this format's name (a worker reopens it by that name)."""

    format = "faulty"


class FaultySink(NpySink):
    """The npy sink, failing where its mask's name says."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        super().__init__(path, shape)
        self.stage = _stage(path)
        self.staged: StagedFiles | None = None

    @classmethod
    def for_source(cls, path: Path, source: Source, request: SinkRequest) -> FaultySink:
        if _stage(path) == "plan":
            raise AttributeError("'NoneType' object has no attribute 'crs'")
        return cls(path, tuple(source.shape))

    def write(self, window: Window, labels: np.ndarray, probs: np.ndarray | None) -> None:
        if self.stage == "write":
            raise ValueError(f"cannot broadcast a block of shape {labels.shape}")
        super().write(window, labels, probs)

    def finalize(self) -> tuple[Path, ...]:
        if self.stage == "finalize":
            raise LookupError("no such band: 0")
        if self.stage == "sidecar":
            self.staged = StagedFiles(self.path.with_suffix(".json"))
            self.staged.temp(self.path.with_suffix(".json")).write_text("{}")
            raise RuntimeError("CPLE_AppDefinedError: the footprint of a geostationary scene")
        return super().finalize()

    def abort(self) -> None:
        if self.staged is not None:
            self.staged.remove()
        super().abort()


def _sink() -> type[Sink]:
    return FaultySink


FORMAT = Format(
    name="faulty",
    title="Faulty .fty",
    sniff=_sniff,
    open_source=FaultySource,
    sink=_sink,
    suffixes=(".fty",),
    priority=4,
)
