"""The state record of each scene of a batch: what was segmented, from what, with which model, and how it went.

One JSON file per scene in ``<out>/.tilewise/state/<mask name>.json``,
written atomically (a temporary name, then a rename), so a killed run leaves
either the old record or the new one. A later run skips a scene whose
record says ``done`` for the same input, model and parameters, and whose
outputs are all there.

The input fingerprint is the size, modification time and resolved path of
every file of the scene (a GeoTIFF is one file, a Zarr store or a DICOM
series many), not a hash of the content: hashing a terabyte archive would
cost as much as segmenting it, and a changed scene changes its size or
modification time (``touch`` counts as a change). An ``s3://`` object is
fingerprinted by its URL, size, ETag and modification time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import torch

from pipeline.batch.storage import S3, is_url
from pipeline.config import PipelineConfig
from tiling.core import staging
from tiling.formats.base import staged_file

__all__ = [
    "STATE_DIR",
    "canonical",
    "SceneRecord",
    "Status",
    "input_fingerprint",
    "model_fingerprint",
    "params_of",
    "read_record",
    "record_path",
    "write_record",
]

log = logging.getLogger(__name__)

#: Bookkeeping folder inside ``--out``: ``state/`` (one record per scene) and ``runs/`` (reports).
STATE_DIR = ".tilewise"


class Status(str, Enum):
    """Where a scene stands."""

    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # in a report only: the record matched, nothing was done

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


@dataclass(frozen=True)
class SceneRecord:
    """What a batch knows about one scene after it ran.

    Attributes:
        src: the scene as listed.
        mask: the mask's path.
        outputs: every path published, mask first.
        input: the input fingerprint (see :func:`input_fingerprint`).
        model: the model/weights fingerprint (see :func:`model_fingerprint`).
        params: the parameters that shape the mask (see :func:`params_of`).
        status: ``done`` or ``failed``.
        error: why it failed, one line; empty when done.
        attempts: how many runs tried it since it last changed.
        tiles: tiles planned.
        resumed_tiles: tiles a resumed run did not redo (0 for a fresh start).
        seconds: from the start of its run until its mask was published (or it failed).
        finished: when it was done or failed, ISO 8601 UTC.
    """

    src: str
    mask: str
    outputs: tuple[str, ...]
    input: Mapping[str, Any]
    model: str
    params: Mapping[str, Any]
    status: str
    error: str = ""
    attempts: int = 1
    tiles: int = 0
    resumed_tiles: int = 0
    seconds: float = 0.0
    finished: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

    def matches(
        self,
        input: Mapping[str, Any],
        model: str,
        params: Mapping[str, Any],
        exists: Callable[[str], bool] = lambda p: Path(p).exists(),
    ) -> bool:
        """Whether this record is a finished run of the same input, model and parameters, outputs in place."""
        return (
            self.status == Status.DONE.value
            and dict(self.input) == dict(input)
            and self.model == model
            and canonical(self.params) == canonical(params)
            and all(exists(p) for p in self.outputs)
        )


def canonical(value: Any) -> str:
    """``value`` as sorted JSON, for comparing parameters read back from a record."""
    return json.dumps(value, sort_keys=True, default=str)


def record_path(out_dir: Path, mask: Path) -> Path:
    """Where the record of the scene whose mask is ``mask`` lives."""
    return out_dir / STATE_DIR / "state" / f"{mask.name}.json"


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def input_fingerprint(src: str) -> dict[str, Any]:
    """Size, modification time (ns) and resolved path of the scene's files; a digest of them for folders.

    Raises:
        OSError: if the scene is missing.
    """
    if is_url(src):
        head = S3().head(src)
        if head is None:
            raise FileNotFoundError(f"{src}: no such object")
        return head
    if "://" in src:
        return {"url": src}
    path = Path(src).resolve()
    if path.is_file():
        size, mtime = _stat(path)
        return {"path": str(path), "size": size, "mtime_ns": mtime}
    if not path.is_dir():
        raise FileNotFoundError(f"{src}: no such file or folder")
    h = hashlib.sha256()
    files = size = 0
    for root, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            p = Path(root) / name
            s, m = _stat(p)
            h.update(f"{p.relative_to(path)}\0{s}\0{m}\n".encode())
            files, size = files + 1, size + s
    return {"path": str(path), "files": files, "size": size, "stat_sha256": h.hexdigest()}


def model_fingerprint(cfg: PipelineConfig, model: torch.nn.Module | None = None) -> str:
    """The model that makes the masks: SHA-256 of the weights file, of a given module's state, or its random init.

    A random initialisation is named by backbone, classes and its seed
    (``--random-weights``): the same seed builds the same network in every
    process, so a re-run skips or resumes scenes as with a weights file.
    """
    if model is not None:
        h = hashlib.sha256(type(model).__qualname__.encode())
        for name, tensor in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return f"module:{type(model).__name__}:sha256:{h.hexdigest()}"
    backbone = str(getattr(cfg.model.backbone, "value", cfg.model.backbone))
    if cfg.model.weights is None:
        return f"random-init:deeplabv3_{backbone}:{cfg.model.classes}:seed={cfg.model.random_weights}"
    provenance = cfg.sink_request().provenance
    return f"deeplabv3_{backbone}:sha256:{provenance.weights_sha256 if provenance else ''}"


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def params_of(cfg: PipelineConfig, normalization: Any = None) -> dict[str, Any]:
    """The parameters that shape a mask: tiling, model (but weights, fingerprinted apart), input and output options.

    Batch size, actors, Ray and timeouts are left out: they change how fast
    a mask is made, not the mask.
    """
    model = {k: v for k, v in asdict(cfg.model).items() if k != "weights"}
    params = {
        "tiling": asdict(cfg.tiling), "model": model, "input": asdict(cfg.input), "output": asdict(cfg.output),
        "save_probs": cfg.save_probs, "allow_no_crs": cfg.allow_no_crs, "format": cfg.output_format,
        "class_colors": cfg.products.class_colors,  # the mask's colour table and style carry them
    }  # fmt: skip
    if normalization is not None:
        params["normalization"] = {"mean": list(normalization.mean), "std": list(normalization.std)}
    plain: dict[str, Any] = _plain(params)
    return plain


#: What each field of a record must hold (JSON types); bool is never an int here.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "src": (str,), "mask": (str,), "outputs": (list,), "input": (dict,), "model": (str,), "params": (dict,),
    "status": (str,), "error": (str,), "attempts": (int,), "tiles": (int,), "resumed_tiles": (int,),
    "seconds": (int, float), "finished": (str,),
}  # fmt: skip
_REQUIRED = ("src", "mask", "outputs", "input", "model", "params", "status")


def _record_problem(data: object) -> str | None:
    """Why ``data`` is not a record (a field missing, unknown or of the wrong type); None when it is one."""
    if not isinstance(data, dict):
        return f"holds {type(data).__name__}, not an object"
    for name in _REQUIRED:
        if name not in data:
            return f"has no {name!r}"
    for name, value in data.items():
        kinds = _FIELD_TYPES.get(name)
        if kinds is None:
            return f"has an unknown field {name!r}"
        if isinstance(value, bool) or not isinstance(value, kinds):
            return f"{name!r} is {value!r}, not {' or '.join(k.__name__ for k in kinds)}"
    if not all(isinstance(o, str) for o in data["outputs"]):
        return "'outputs' holds something other than paths"
    if data["status"] not in (Status.DONE.value, Status.FAILED.value):
        return f"'status' is {data['status']!r}, not 'done' or 'failed'"
    if any(data.get(n, 0) < 0 for n in ("attempts", "tiles", "resumed_tiles")):
        return "a count is negative"
    return None


def read_record(path: Path) -> SceneRecord | None:
    """The record at ``path``, or None when there is none or it cannot be read (the scene is then redone).

    A record is read by anyone who can write into ``--out``: one that is not
    JSON, or whose fields do not hold what they should (``"attempts": "2"``),
    counts as unreadable, with a log line.
    """
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("%s: unreadable state record (%s); the scene is segmented again", path, e)
        return None
    problem = _record_problem(data)
    if problem is not None:
        log.warning("%s: unreadable state record (it %s); the scene is segmented again", path, problem)
        return None
    data["outputs"] = tuple(data["outputs"])
    return SceneRecord(**data)


def write_record(path: Path, record: SceneRecord) -> None:
    """Write ``record`` at ``path`` atomically (temporary name, then rename), removing a killed run's leftovers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging.remove_stale(path.parent, f".{path.name}.")
    with staged_file(path, ".json") as tmp:
        tmp.write_text(json.dumps(asdict(record), indent=1, default=str) + "\n")
