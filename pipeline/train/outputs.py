"""The run folder: which files a run writes there, how it knows its own, and how it writes them.

A run writes :data:`RUN_FILES` into ``out``, each carrying tilewise's mark
(a first comment line, a ``tilewise`` key, a PNG ``Software`` text, an
export's metadata or a checkpoint's state), so a later run replaces only
files tilewise wrote and refuses a folder that holds someone else's
``config.yaml`` or ``model.pt``. Every file is written under a hidden
temporary name and renamed (:func:`write_atomically`); a failed write, a full
disk included, removes its temporary file and ends the run with one line.

The folder is checked on the driver before anything starts
(:func:`check_out`) and created only when the run is about to start; the
files are written by rank 0 after each finished epoch, ``config.yaml`` with
them, so a run (or a resume) that fails before its first epoch leaves the
folder as it was.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from models.train import temp_path, written_by_tilewise
from tiling.errors import ConfigError, SinkError
from tiling.formats.base import sink_error
from tiling.version import mark

__all__ = [
    "CONFIG_MARK",
    "RUN_FILES",
    "check_out",
    "config_text",
    "is_url",
    "owned",
    "remove_temp_files",
    "write_atomically",
    "write_text",
]

#: Every file a run writes into its folder.
RUN_FILES = ("checkpoint.pt", "model.pt", "metrics.json", "config.yaml", "curves.png", "confusion.png")

#: The first line of a ``config.yaml`` tilewise wrote (what :func:`owned` looks for).
CONFIG_MARK = "# written by tilewise train"


def is_url(text: str) -> bool:
    """Whether ``text`` names object storage or a GDAL virtual file (``s3://``, ``/vsis3/``), not a local path."""
    return "://" in text or text.startswith("/vsi")


def config_text(flat: dict[str, Any]) -> str:
    """The ``config.yaml`` of a run: tilewise's mark, then the flat keys (``tilewise train config.yaml`` repeats it)."""
    body: str = yaml.safe_dump(flat, sort_keys=False)
    return f"{CONFIG_MARK} ({mark()}); `tilewise train config.yaml` repeats this run\n{body}"


def _png_software(path: Path) -> str:
    """The ``Software`` text of a PNG, or "" (read from its chunks, never decoding the image)."""
    with path.open("rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return ""
        while True:
            head = f.read(8)
            if len(head) < 8:
                return ""
            size, kind = int.from_bytes(head[:4], "big"), head[4:]
            if kind == b"IDAT" or size > 1 << 20:
                return ""
            body = f.read(size)
            f.read(4)  # CRC
            if kind == b"tEXt" and body.startswith(b"Software\x00"):
                return body[9:].decode("latin-1")


def owned(path: Path) -> bool:
    """Whether ``path`` (one of :data:`RUN_FILES`) carries tilewise's mark; unreadable files do not."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        if path.suffix == ".pt":
            return written_by_tilewise(path)
        if path.suffix == ".png":
            return _png_software(path).startswith("tilewise")
        with path.open(encoding="utf-8") as f:
            if path.suffix == ".yaml":
                return f.readline().startswith(CONFIG_MARK)
            data = json.load(f)
        return isinstance(data, dict) and str(data.get("tilewise", "")).startswith("tilewise")
    except (OSError, ValueError):
        return False


def check_out(out: str, resume: Path | None) -> Path:
    """The run folder ``out``, refused before anything is written if the run could not write it safely.

    Nothing is created here: the folder is made when the run starts.

    Raises:
        ConfigError: for object storage (a run writes to a file system, a shared one on a cluster).
        SinkError: if the parent folder is missing or not writable, a file sits at ``out``, ``out``
            holds a run that is not resumed, or a file of a run's names that tilewise did not write.
    """
    if is_url(out):
        raise ConfigError(
            f"out: {out}: a run writes its checkpoints to a folder on a file system (on a cluster, one every "
            "node mounts), not to object storage; give a local or shared folder and copy the run afterwards"
        )
    path = Path(out).absolute()
    if not path.parent.is_dir():
        raise SinkError(f"{path}: cannot write the run, folder {path.parent} does not exist")
    if path.exists() and not path.is_dir():
        raise SinkError(f"{path}: cannot write the run, a file of that name exists")
    folder = path if path.is_dir() else path.parent
    if not os.access(folder, os.W_OK):
        raise SinkError(f"{path}: cannot write the run, folder {folder} is not writable")
    checkpoint = path / "checkpoint.pt"
    if checkpoint.exists() and (resume is None or resume.resolve() != checkpoint.resolve()):
        raise SinkError(f"{path}: already holds a run; pass --resume {checkpoint} or choose another --out")
    for name in RUN_FILES:
        f = path / name
        if (f.exists() or f.is_symlink()) and not owned(f):
            raise SinkError(
                f"{f}: exists and was not written by tilewise, so it is never replaced; "
                "move it away or choose another --out"
            )
    return path


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(temporary)`` and rename the temporary file to ``path``.

    Raises:
        SinkError: one line if the write fails (a full disk says so); the temporary file is removed.
    """
    tmp = temp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        tmp.unlink(missing_ok=True)
        raise sink_error(path, e) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`write_atomically`)."""
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def remove_temp_files(out: Path) -> list[Path]:
    """Remove the temporary files of :data:`RUN_FILES` in ``out`` (a run's workers are gone); returns them."""
    removed = []
    for name in RUN_FILES:
        for tmp in out.glob(f".{name}.tmp*"):
            if tmp.is_file() and not tmp.is_symlink():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed
