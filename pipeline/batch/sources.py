"""What a batch run segments: the scenes of a folder, a glob or a manifest, each with its own reader options.

A folder is an archive: it gives its image files (the suffixes of the formats tilewise reads,
or a DICOM preamble), its Zarr stores and its DICOM series folders, in name
order, skipping hidden entries and the output folder. A glob gives what it
matches (``**`` recurses). An ``s3://`` URL is one scene; one ending in
``/``, or with a glob pattern, lists the image files under it. A manifest is a CSV file with a ``path`` column,
or JSON lines (``.jsonl``/``.ndjson``) of objects with a ``path`` key; its
other columns or keys are per-scene reader options (``bands``, ``series``,
``level``, ``window``, ``complex``, ``allow_drivers``), and relative paths
are read from the manifest's folder.
"""

from __future__ import annotations

import csv
import glob
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.batch.storage import S3, is_url
from tiling.errors import ConfigError
from tiling.formats import all_formats

__all__ = ["MANIFEST_SUFFIXES", "SCENE_OPTIONS", "SceneEntry", "discover"]

#: Suffixes read as manifests rather than as images.
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson")
#: Per-scene options a manifest may set: the reader options of ``InputConfig``.
SCENE_OPTIONS = ("bands", "series", "level", "window", "complex", "allow_drivers")


@dataclass(frozen=True)
class SceneEntry:
    """One scene of a batch: where it is and the reader options it alone takes.

    Attributes:
        src: the image file, folder or store (a local path or a URL).
        options: reader options for this scene only (``InputConfig`` field names).
    """

    src: str
    options: Mapping[str, Any] = field(default_factory=dict)


def _image_suffixes() -> set[str]:
    return {s.lower() for f in all_formats() if f.open_source is not None for s in f.suffixes}


def _is_scene(path: Path, suffixes: set[str]) -> bool:
    if path.name.startswith("."):
        return False
    if path.is_dir():
        return (
            path.suffix == ".zarr"
            or (path / "zarr.json").exists()
            or (path / ".zattrs").exists()
            or any(p.is_file() and not p.name.startswith(".") for p in path.iterdir())
        )
    if path.suffix.lower() in suffixes:
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _folder(folder: Path, out_dir: Path) -> list[SceneEntry]:
    suffixes = _image_suffixes()
    skip = out_dir.resolve()
    return [SceneEntry(str(p)) for p in sorted(folder.iterdir()) if p.resolve() != skip and _is_scene(p, suffixes)]


def _option(name: str, value: Any, where: str) -> Any:
    """A manifest value as the config field wants it (CSV gives strings)."""
    if value is None or value == "":
        return None
    if name == "bands":
        if isinstance(value, str):
            try:
                return tuple(int(v) for v in value.replace(";", ",").split(",") if v.strip())
            except ValueError:
                raise ConfigError(f"{where}: bands must be whole numbers like 1,2,3, got {value!r}") from None
        return tuple(int(v) for v in value)
    if name == "level":
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: level must be a whole number, got {value!r}") from None
    if name == "allow_drivers" and isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return value


def _entry(row: Mapping[str, Any], base: Path, where: str) -> SceneEntry:
    path = row.get("path")
    if not path:
        raise ConfigError(f"{where}: no path; every manifest row names its scene under 'path'")
    unknown = sorted(set(row) - {"path", *SCENE_OPTIONS})
    if unknown:
        raise ConfigError(
            f"{where}: unknown per-scene option {', '.join(unknown)}; a manifest may set {', '.join(SCENE_OPTIONS)}"
        )
    options = {k: _option(k, v, where) for k, v in row.items() if k != "path"}
    src = str(path)
    if "://" not in src and not Path(src).is_absolute():
        src = str(base / src)
    return SceneEntry(src, {k: v for k, v in options.items() if v is not None})


def _manifest(path: Path) -> list[SceneEntry]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the manifest ({e.strerror or e})") from None
    base = path.parent
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise ConfigError(f"{path}: a CSV manifest needs a header row with a 'path' column")
        return [_entry(row, base, f"{path}, line {n}") for n, row in enumerate(reader, start=2)]
    entries = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(
                f'{path}, line {n}: not JSON ({e.msg}); one object per line, like {{"path": ...}}'
            ) from None
        if isinstance(row, str):
            row = {"path": row}
        if not isinstance(row, dict):
            raise ConfigError(f'{path}, line {n}: expected an object like {{"path": ...}}, got {type(row).__name__}')
        entries.append(_entry(row, base, f"{path}, line {n}"))
    return entries


def _expand(source: str, out_dir: Path) -> list[SceneEntry]:
    if is_url(source):
        if not (source.endswith("/") or glob.has_magic(source)):
            return [SceneEntry(source)]
        suffixes = _image_suffixes()
        return [SceneEntry(u) for u in S3().list(source) if Path(u).suffix.lower() in suffixes]
    if "://" in source:
        return [SceneEntry(source)]
    path = Path(source)
    if path.is_dir() and not (path.suffix == ".zarr" or (path / "zarr.json").exists() or (path / ".zattrs").exists()):
        return _folder(path, out_dir)  # an archive; a DICOM series folder on its own goes in a manifest or glob
    if path.exists():
        return _manifest(path) if path.suffix.lower() in MANIFEST_SUFFIXES else [SceneEntry(source)]
    if glob.has_magic(source):
        matches = sorted(glob.glob(source, recursive=True))
        suffixes = _image_suffixes()
        return [
            SceneEntry(m) for m in matches if _is_scene(Path(m), suffixes) and Path(m).resolve() != out_dir.resolve()
        ]
    raise ConfigError(f"{source}: no such file, folder or manifest, and no glob pattern; check the path")


def discover(sources: Sequence[str | Path], out_dir: str | Path) -> list[SceneEntry]:
    """Every scene ``sources`` name, in order, each once (the first mention's options win).

    Raises:
        ConfigError: for a source that is neither a scene, a folder, a glob nor a
            readable manifest, or a manifest row without a path.
    """
    seen: dict[str, SceneEntry] = {}
    for source in sources:
        for entry in _expand(str(source), Path(out_dir)):
            seen.setdefault(entry.src, entry)
    return list(seen.values())
