"""What a batch run segments: the scenes of a folder, a glob or a manifest, each with its own reader options.

A folder is an archive: it gives its image files (the suffixes of the formats tilewise reads,
or a DICOM preamble), its Zarr stores and its DICOM series folders, in name
order, skipping hidden entries. A glob gives what it matches (``**``
recurses). Neither ever gives tilewise's own outputs, so a run into (or
beside) its archive never segments its masks on the next run: the
``--out`` folder itself, anything in a ``.tilewise`` folder, every output
the state records of ``--out`` list, every folder that holds a ``.tilewise``
folder (another batch's ``--out``), and every file that carries tilewise's
mark (what a format's ``owns`` recognises) are left out. An ``s3://`` URL is one scene; one ending in
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
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.batch.report import EXIT_NO_SCENES
from pipeline.batch.state import STATE_DIR
from pipeline.batch.storage import S3, is_url
from tiling.errors import ConfigError
from tiling.formats import all_formats, sniff

__all__ = ["MANIFEST_SUFFIXES", "SCENE_OPTIONS", "NoScenesError", "SceneEntry", "discover"]

#: Suffixes read as manifests rather than as images.
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson")
#: Per-scene options a manifest may set: the reader options of ``InputConfig``.
SCENE_OPTIONS = ("bands", "series", "level", "window", "complex", "allow_drivers")


log = logging.getLogger(__name__)


class NoScenesError(ConfigError):
    """The sources name no scene to segment (an empty folder, a glob matching nothing, an empty manifest).

    Attributes:
        exit_status: what ``tilewise batch`` exits with (:data:`~pipeline.batch.report.EXIT_NO_SCENES`).
    """

    exit_status = EXIT_NO_SCENES


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


def _folder(folder: Path) -> list[SceneEntry]:
    suffixes = _image_suffixes()
    return [SceneEntry(str(p)) for p in sorted(folder.iterdir()) if _is_scene(p, suffixes)]


class _Outputs:
    """Tells tilewise's own outputs (under ``--out``, or carrying its mark) from scenes.

    Args:
        out_dir: the local ``--out`` folder (the staging folder of an ``s3://`` one, its records downloaded).
        remote: the ``s3://`` ``--out``, if any.
    """

    def __init__(self, out_dir: Path, remote: str | None = None) -> None:
        self.out_dir = out_dir.resolve()
        self.remote = remote.rstrip("/") if remote else None
        self.recorded: set[str] = set()
        for path in sorted((out_dir / STATE_DIR / "state").glob("*.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # an unreadable record: the marks below still tell its outputs
            outputs = record.get("outputs") if isinstance(record, dict) else None
            listed = [record.get("mask"), *outputs] if isinstance(outputs, list) else []
            self.recorded.update(self._key(o) for o in listed if isinstance(o, str) and o)
        self.skipped = 0
        self._s3: S3 | None = None

    def _key(self, src: str) -> str:
        return src if "://" in src else str(Path(src).resolve())

    def __call__(self, src: str) -> bool:
        """Whether ``src`` is tilewise's own (counted in :attr:`skipped`)."""
        own = self._own(src)
        if own:
            log.debug("%s: tilewise's own output, not a scene", src)
            self.skipped += 1
        return own

    def _own(self, src: str) -> bool:
        if self._key(src) in self.recorded:
            return True
        if is_url(src):
            if self.remote is None or not src.startswith(self.remote + "/"):
                return False
            if src.startswith(f"{self.remote}/{STATE_DIR}/"):
                return True
            self._s3 = self._s3 or S3()
            return bool(self._s3.written_by_tilewise(src))
        path = Path(src)
        resolved = path.resolve()
        if resolved == self.out_dir or STATE_DIR in path.parts or STATE_DIR in resolved.parts:
            return True
        if (path / STATE_DIR).is_dir():  # the --out folder of another batch
            return True
        try:
            fmt = sniff(path)
            return fmt.owns is not None and bool(fmt.owns(path))
        except Exception:  # not a format's file, or one its check cannot read: not tilewise's
            return False


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


def _expand(source: str, own: Callable[[str], bool]) -> tuple[list[SceneEntry], str]:
    """The scenes ``source`` names, and what was looked for (said when there are none)."""
    if is_url(source):
        if not (source.endswith("/") or glob.has_magic(source)):
            return [SceneEntry(source)], ""
        suffixes = _image_suffixes()
        urls = [u for u in S3().list(source) if Path(u).suffix.lower() in suffixes]
        return [SceneEntry(u) for u in urls if not own(u)], f"{source} (objects ending in {_listed(suffixes)})"
    if "://" in source:
        return [SceneEntry(source)], ""
    path = Path(source)
    if path.is_dir() and not (path.suffix == ".zarr" or (path / "zarr.json").exists() or (path / ".zattrs").exists()):
        # an archive; a DICOM series folder on its own goes in a manifest or glob
        what = f"{source} (a folder: image files ending in {_listed(_image_suffixes())}, Zarr stores, DICOM series)"
        return [e for e in _folder(path) if not own(e.src)], what
    if path.exists():
        if path.suffix.lower() in MANIFEST_SUFFIXES:
            return _manifest(path), f"{source} (a manifest with no rows)"
        return [SceneEntry(source)], ""
    if glob.has_magic(source):
        suffixes = _image_suffixes()
        matches = sorted(glob.glob(source, recursive=True))
        found = [SceneEntry(m) for m in matches if _is_scene(Path(m), suffixes) and not own(m)]
        return found, f"{source} (a glob: {len(matches)} paths matched, none a scene)"
    raise ConfigError(f"{source}: no such file, folder or manifest, and no glob pattern; check the path")


def _listed(suffixes: set[str]) -> str:
    return "/".join(sorted(suffixes))


def discover(sources: Sequence[str | Path], out_dir: str | Path, remote: str | None = None) -> list[SceneEntry]:
    """Every scene ``sources`` name, in order, each once (the first mention's options win).

    Folders, globs and listings of ``s3://`` prefixes never give tilewise's
    own outputs (see the module docstring); ``remote`` is an ``s3://``
    ``--out``, whose records were downloaded into ``out_dir``.

    Raises:
        NoScenesError: if the sources name no scene at all; the message says what was looked for.
        ConfigError: for a source that is neither a scene, a folder, a glob nor a
            readable manifest, or a manifest row without a path.
    """
    own = _Outputs(Path(out_dir), remote)
    seen: dict[str, SceneEntry] = {}
    looked: list[str] = []
    for source in sources:
        entries, what = _expand(str(source), own)
        if not entries:
            looked.append(what)
        for entry in entries:
            seen.setdefault(entry.src, entry)
    if not seen:
        skipped = f"; {own.skipped} of tilewise's own outputs left out" if own.skipped else ""
        raise NoScenesError(f"SOURCES named no scene to segment; looked in {'; '.join(looked)}{skipped}")
    return list(seen.values())
