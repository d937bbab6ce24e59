"""A mask written as a label image of its own OME-Zarr source: ``image.ome.zarr/labels/<name>``.

NGFF keeps label images inside the image store, and napari (through
ome-zarr-py), Fiji and vizarr find them there: the ``labels`` group lists
their names, and each is a multiscale image with ``image-label`` metadata.
:class:`LabelImageSink` writes one:

- one level per level of the image, with that level's shape, chunks and
  coordinate transformations (the channel axis dropped, as ome-zarr-py does
  for label images), so every label level lies on its image level's pixels.
  The segmented level (``--level``) holds the mask; the others are resampled
  from it by nearest neighbour through the transformations: coarser levels
  each from the next finer one (a few chunks in memory), finer ones from the
  segmented level;
- in the image's Zarr format: NGFF 0.4 on zarr v2, 0.5 on zarr v3;
- under a hidden temporary name inside ``labels/``, renamed into place by
  :meth:`LabelImageSink.finalize`, which then adds the name to the ``labels``
  list (creating the group when the image had none). The list is rewritten
  whole through a rename, under an exclusive lock on the ``labels`` folder,
  keeping every entry it had.

Nothing outside ``labels/`` is written: the image is opened read-only. A
label image of that name that tilewise did not write is never replaced.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec

from tiling.core import staging
from tiling.core.labels import LABEL_NODATA, RGB
from tiling.core.windows import Window, clip, plan_windows
from tiling.errors import ConfigError, SinkError
from tiling.formats.base import Sink, SinkRequest, Source, sink_error, staged_file, temp_name
from tiling.formats.zarr import FORMAT
from tiling.formats.zarr.reader import ZarrSource, axis_roles, compose_transforms, read_multiscales
from tiling.formats.zarr.writer import OME_VERSION, hex_colors, label_colors, publish

try:  # POSIX; elsewhere the labels list is updated without a lock
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["OME_V3_VERSION", "LabelImageSink", "label_image_of"]

log = logging.getLogger(__name__)

#: The NGFF version of a label image in a zarr v3 store.
OME_V3_VERSION = "0.5"
#: A label image's name: a plain path component (no hidden names: temporary names start with a dot).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: Ties (a fine pixel halfway between two coarse ones) go to the later pixel, whatever the rounding.
_TIE = 1e-6


def label_image_of(path: Path) -> Path | None:
    """The OME-Zarr image whose label image ``path`` would be (``<image>/labels/<name>``), or None."""
    image = path.parent.parent
    if path.parent.name != "labels" or not image.is_dir():
        return None
    try:
        group = zarr.open_group(str(image), mode="r")
    except Exception:  # not a Zarr group: then ``path`` is an ordinary output
        return None
    return image if read_multiscales(group) is not None else None


@dataclass(frozen=True)
class _Level:
    """One level of the label image, on the pixels of the image level of the same index.

    Attributes:
        path: the dataset path (the image's).
        shape: the image level's shape without its channel axis.
        chunks: the image level's chunks without its channel axis.
        transforms: the image level's ``coordinateTransformations``, channel entries dropped.
        scale: physical pixel size per axis (the global transformations included).
        translation: physical position of pixel 0 per axis (likewise).
    """

    path: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    transforms: list[dict[str, Any]]
    scale: tuple[float, ...]
    translation: tuple[float, ...]


def _drop_channel(items: Sequence[dict[str, Any]] | None, keep: Sequence[int], where: str) -> list[dict[str, Any]]:
    """``coordinateTransformations`` with the dropped axes' entries removed.

    Raises:
        ConfigError: for a transformation given by path or of an unknown type.
    """
    out = []
    for t in items or ():
        kind = t.get("type")
        if kind == "identity":
            out.append(dict(t))
        elif kind in ("scale", "translation") and isinstance(t.get(kind), list):
            out.append({**t, kind: [t[kind][i] for i in keep]})
        else:
            raise ConfigError(
                f"{where}: a {kind!r} coordinate transformation without inline values; "
                "tilewise copies scale and translation lists only"
            )
    return out


def _levels(image: Path, group: zarr.Group, ms: dict[str, Any]) -> tuple[list[Any], list[_Level], list[dict]]:
    """The label axes (the image's minus the channel), one :class:`_Level` per image level, the global transforms.

    Raises:
        ConfigError: if a level is missing or not an array, has another rank than the axes,
            or its transformations are unusable.
    """
    axes = list(ms["axes"])
    _, roles, _ = axis_roles(axes)
    keep = [i for i, r in enumerate(roles) if r != "c"]
    global_ = _drop_channel(ms.get("coordinateTransformations"), keep, str(image))
    gs, gt = compose_transforms(global_, len(keep))
    levels = []
    for d in ms["datasets"]:
        arr = group.get(str(d["path"]))
        if not isinstance(arr, zarr.Array) or arr.ndim != len(axes):
            raise ConfigError(f"{image}: level {d['path']!r} is missing, not an array, or not of {len(axes)} axes")
        transforms = _drop_channel(d.get("coordinateTransformations"), keep, f"{image}/{d['path']}")
        s, t = compose_transforms(transforms, len(keep))
        scale, translation = s * gs, t * gs + gt
        if not (np.isfinite(scale).all() and (scale > 0).all() and np.isfinite(translation).all()):
            raise ConfigError(
                f"{image}: level {d['path']!r} has scale {scale.tolist()}; it must be finite and positive"
            )
        levels.append(
            _Level(
                path=str(d["path"]), shape=tuple(int(arr.shape[i]) for i in keep),
                chunks=tuple(max(1, min(int(arr.chunks[i]), int(arr.shape[i]))) for i in keep), transforms=transforms,
                scale=tuple(map(float, scale)), translation=tuple(map(float, translation)),
            )
        )  # fmt: skip
    return [axes[i] for i in keep], levels, global_


def _nearest(src: _Level, dst: _Level, axis: int, index: np.ndarray) -> np.ndarray:
    """For pixels ``index`` of ``dst`` along ``axis``, the nearest pixel of ``src`` in physical space."""
    x = dst.translation[axis] + index * dst.scale[axis]
    k = np.floor((x - src.translation[axis]) / src.scale[axis] + 0.5 + _TIE).astype(np.int64)
    return np.clip(k, 0, src.shape[axis] - 1)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise SinkError(f"{path}: cannot read it ({e}); fix or remove it") from e


def _write_json(path: Path, value: Any) -> None:
    """Replace ``path`` whole: write a temporary sibling, then rename it."""
    with staged_file(path, ".part") as tmp:
        tmp.write_text(json.dumps(value, indent=2))


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` (released when the descriptor closes).

    Where a file system cannot lock a folder (NFS emulates ``flock`` with
    byte-range locks, which a read-only descriptor cannot take), the update
    goes ahead unlocked: it is still one rename.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:  # pragma: no cover - file systems without folder locks
            log.debug("cannot lock %s (%s); updating its labels list unlocked", folder, e)
        yield
    finally:
        os.close(fd)


class _LabelsGroup:
    """The ``labels`` group of an OME-Zarr image, read and listed through its metadata files.

    Args:
        folder: ``<image>/labels`` (it may not exist yet).
        zarr_format: the image's Zarr format; the group must be of the same.
    """

    def __init__(self, folder: Path, zarr_format: int) -> None:
        self.folder = folder
        self.zarr_format = zarr_format
        self.meta = folder / (".zattrs" if zarr_format == 2 else "zarr.json")

    def check(self) -> None:
        """Refuse a ``labels`` that is not a labels group of this image's Zarr format.

        Raises:
            SinkError: if it is a file, an array, a group of the other Zarr format,
                or its ``labels`` list is not a list of names.
        """
        if not self.folder.exists():
            return
        if not self.folder.is_dir():
            raise SinkError(f"{self.folder}: is a file, not a labels group; tilewise leaves it as it is")
        other = ".zgroup" if self.zarr_format == 3 else "zarr.json"
        if (self.folder / ".zarray").exists() or (self.folder / other).exists():
            raise SinkError(f"{self.folder}: is not a zarr v{self.zarr_format} group like its image; left as it is")
        listed = self.listed()
        if not (isinstance(listed, list) and all(isinstance(n, str) for n in listed)):
            raise SinkError(f"{self.folder}: its 'labels' attribute is {listed!r}, not a list of names; fix it")

    def _attrs(self, meta: Any) -> dict[str, Any]:
        if not isinstance(meta, dict):
            return {}
        if self.zarr_format == 2:
            return meta
        attrs = meta.get("attributes")
        ome = attrs.get("ome") if isinstance(attrs, dict) else None
        return ome if isinstance(ome, dict) else {}

    def listed(self) -> Any:
        """The ``labels`` list as stored (``[]`` when there is none yet)."""
        return self._attrs(_read_json(self.meta)).get("labels", [])

    def add(self, name: str) -> None:
        """Add ``name`` to the list, creating the group's metadata if missing; every other entry stays."""
        if self.zarr_format == 2:
            if not (self.folder / ".zgroup").exists():
                _write_json(self.folder / ".zgroup", {"zarr_format": 2})
            meta = _read_json(self.meta) or {}
            attrs = meta
        else:
            meta = _read_json(self.meta) or {"zarr_format": 3, "node_type": "group", "attributes": {}}
            attrs = meta.setdefault("attributes", {}).setdefault("ome", {"version": OME_V3_VERSION})
        listed = list(attrs.get("labels", []))
        if name not in listed:
            attrs["labels"] = [*listed, name]
            _write_json(self.meta, meta)


class LabelImageSink(Sink):
    """Write a uint8 label image (255 = nodata) into the ``labels`` group of its OME-Zarr source.

    Args:
        path: ``<image>/labels/<name>``.
        image: the image, opened at the level that is segmented (its multiscale level,
            not a plain array inside it).
        class_names: one name per class (label value k is ``class_names[k]``).
        save_probs: also store class probabilities, in the subgroup ``probs``
            (probability x 255 as uint8, the segmented level only), as the
            standalone sink does.

    Raises:
        ConfigError: if the name is not a plain name, or the image's metadata cannot be copied.
        SinkError: if ``labels`` is not a labels group of the image's Zarr format, a label image
            of that name exists that tilewise did not write, or the store is not writable.
    """

    into_source = True

    def __init__(
        self,
        path: str | Path,
        image: ZarrSource,
        class_names: Sequence[str],
        save_probs: bool = False,
        class_colors: Sequence[RGB] | None = None,
    ) -> None:
        self.path = Path(path)
        self.class_colors = list(class_colors) if class_colors is not None else None
        self.image = Path(image.path)
        self.class_names = list(class_names)
        if not _NAME.fullmatch(self.path.name) or self.path.name == "zarr.json":
            raise ConfigError(
                f"{self.path}: {self.path.name!r} is not a label name; use letters, digits, '.', '_' and '-', "
                "starting with a letter or digit"
            )
        group = zarr.open_group(str(self.image), mode="r")
        self.zarr_format: Literal[2, 3] = 3 if group.metadata.zarr_format == 3 else 2
        ms = image.multiscales
        if ms is None or image.level is None:
            raise ConfigError(f"{self.path}: {self.image} is read as a plain array; a label image needs its levels")
        try:
            self.axes, self.levels, self._global = _levels(self.image, group, ms)
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"{self.image}: malformed multiscales metadata ({type(e).__name__}: {e})") from e
        self.level = int(image.level)
        self._names, roles, _ = axis_roles(self.axes)
        self._lead = tuple(r != "s" for r in roles)  # a time axis (of one point) before the spatial ones
        self.shape = tuple(int(n) for n in image.shape)
        self.block = tuple(int(min(b, n)) for b, n in zip(image.block_shape, self.shape))
        if self._spatial(self.levels[self.level].shape) != self.shape:
            raise ConfigError(f"{self.path}: level {self.level} of {self.image} is not the image that was read")
        self._labels_group = _LabelsGroup(self.path.parent, self.zarr_format)
        self._labels_group.check()
        self._check_target()
        self._made_folder = self._make_folder()
        self.tmp = temp_name(self.path, ".part")
        self._closed = False
        try:
            self._root = zarr.open_group(store=str(self.tmp), mode="w-", zarr_format=self.zarr_format)
            self._arrays = [
                self._create(self._root, lv.path, lv.shape, lv.chunks, LABEL_NODATA, self._names) for lv in self.levels
            ]
            self._probs = self._create_probs() if save_probs else None
        except Exception as e:
            self.abort()
            raise SinkError(f"{self.path}: cannot create the label image ({e})") from e

    @classmethod
    def for_source(cls, path: Path, source: Source, request: SinkRequest) -> LabelImageSink:
        """The label image at ``path`` of ``source``, which must be the image that holds it.

        Raises:
            ConfigError: if ``source`` is not that OME-Zarr image.
        """
        image = path.parent.parent
        if (
            not isinstance(source, ZarrSource)
            or source.multiscales is None
            or Path(source.path).resolve() != image.resolve()
        ):
            raise ConfigError(
                f"{path}: a label image of {image} is a mask of that image only, and the input is {source.path}; "
                "segment that image, or write the mask to a store of its own (--out mask.ome.zarr)"
            )
        return cls(path, source, request.class_names, save_probs=request.save_probs, class_colors=request.class_colors)

    def _spatial(self, shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(int(n) for n, lead in zip(shape, self._lead) if not lead)

    def _check_target(self) -> None:
        """Fail before any work if ``path`` holds something tilewise must not replace, or cannot be written."""
        p = self.path
        if p.is_symlink() or (p.exists() and not (p.is_dir() and FORMAT.owns is not None and FORMAT.owns(p))):
            raise SinkError(f"{p}: exists and was not written by tilewise; it is never replaced")
        folder = p.parent if p.parent.exists() else self.image
        if not os.access(folder, os.W_OK):
            raise SinkError(f"{p}: cannot write the label image, folder {folder} is not writable")

    def _make_folder(self) -> bool:
        """Create ``labels/`` (only the folder: its metadata is written when the mask is published)."""
        try:
            self.path.parent.mkdir()
        except FileExistsError:
            return False
        except OSError as e:
            raise SinkError(f"{self.path}: cannot create {self.path.parent} ({e.strerror})") from e
        return True

    def _create(
        self, group: zarr.Group, name: str, shape: Sequence[int], chunks: Sequence[int], fill: int, names: Sequence[str]
    ) -> zarr.Array:
        """A uint8 array, compressed as the standalone sink's; v3 arrays carry ``dimension_names`` (NGFF 0.5)."""
        compression: dict[str, Any] = (
            {"compressors": numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE),
             "chunk_key_encoding": {"name": "v2", "separator": "/"}}
            if self.zarr_format == 2
            else {"compressors": BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"),
                  "dimension_names": tuple(names)}
        )  # fmt: skip
        return group.create_array(
            name, shape=tuple(shape), chunks=tuple(chunks), dtype="uint8", fill_value=fill, **compression
        )

    def _create_probs(self) -> zarr.Array:
        group = self._root.create_group("probs")
        level = self.levels[self.level]
        k = len(self.class_names)
        arr = self._create(group, "0", (k, *level.shape), (1, *level.chunks), 0, ("c", *self._names))
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": [1.0, *level.scale]}]
        if any(level.translation):
            transforms.append({"type": "translation", "translation": [0.0, *level.translation]})
        multiscale = {
            "name": "probabilities", "axes": [{"name": "c", "type": "channel"}, *self.axes],
            "datasets": [{"path": "0", "coordinateTransformations": transforms}],
        }  # fmt: skip
        omero = {"channels": [{"label": n, "color": c, "window": {"start": 0, "end": 255, "min": 0, "max": 255}}
                              for n, c in zip(self.class_names, hex_colors(k, self.class_colors))]}  # fmt: skip
        tilewise = {"class_names": self.class_names, "scale": "probability = value / 255"}
        group.attrs.update(self._ome({"multiscales": [multiscale], "omero": omero}, tilewise))
        return arr

    def _ome(self, ome: dict[str, Any], tilewise: dict[str, Any]) -> dict[str, Any]:
        """Attributes in the image's NGFF layout: 0.4 at the top with versions, 0.5 under ``ome``."""
        if self.zarr_format == 3:
            return {"ome": {"version": OME_V3_VERSION, **ome}, "tilewise": tilewise}
        attrs = {**ome, "multiscales": [{**m, "version": OME_VERSION} for m in ome["multiscales"]]}
        if "image-label" in ome:
            attrs["image-label"] = {**ome["image-label"], "version": OME_VERSION}
        return {**attrs, "tilewise": tilewise}

    def _index(self, window: Window) -> tuple[int | slice, ...]:
        """The label array index of a spatial window (0 on a time axis)."""
        spatial = iter(window.to_slices())
        return tuple(0 if lead else next(spatial) for lead in self._lead)

    def write(self, window: Window, labels: np.ndarray, probs: np.ndarray | None = None) -> None:
        """Write one block of the segmented level: labels (*window.shape) uint8, probs (K, *window.shape) or None.

        Raises:
            SinkFinalizedError: after :meth:`finalize` or :meth:`abort`.
            SinkError: if the window leaves the image or the arrays have the wrong shape.
        """
        self._check_block(window, labels)
        try:
            index = self._index(window)
            self._arrays[self.level][index] = labels.astype(np.uint8, copy=False)
            if self._probs is not None and probs is not None:
                probs_index = (slice(None), *index)
                self._probs[probs_index] = np.rint(np.clip(probs, 0.0, 1.0) * 255).astype(np.uint8)
        except (OSError, RuntimeError, ValueError) as e:  # zarr reports store failures in these
            raise sink_error(self.path, e) from e

    def _resample(self, dst: int, src: int) -> None:
        """Fill level ``dst`` from level ``src`` by nearest neighbour, chunk by chunk of ``dst``."""
        to, fro = self.levels[dst], self.levels[src]
        out, inp = self._arrays[dst], self._arrays[src]
        for w in plan_windows(to.shape, to.chunks, to.chunks, edge="pad"):
            w = clip(w, to.shape)
            maps = [_nearest(fro, to, a, np.arange(s, e)) for a, (s, e) in enumerate(zip(w.start, w.stop))]
            lo = [int(m.min()) for m in maps]
            block = np.asarray(inp[tuple(slice(low, int(m.max()) + 1) for low, m in zip(lo, maps))])
            out[w.to_slices()] = block[np.ix_(*(m - low for m, low in zip(maps, lo)))]

    def _write_metadata(self) -> None:
        multiscale: dict[str, Any] = {
            "name": self.path.name, "axes": self.axes,
            "datasets": [{"path": lv.path, "coordinateTransformations": lv.transforms} for lv in self.levels],
            "type": "nearest",
            "metadata": {"method": f"nearest neighbour through the coordinate transformations from level {self.level}"},
        }  # fmt: skip
        if self._global:
            multiscale["coordinateTransformations"] = self._global
        label = {
            "colors": label_colors(self.class_names, self.class_colors), "source": {"image": "../../"},
            "properties": [*({"label-value": k, "class": n} for k, n in enumerate(self.class_names)),
                           {"label-value": LABEL_NODATA, "class": "nodata"}],
        }  # fmt: skip
        tilewise = {"class_names": self.class_names, "nodata": LABEL_NODATA, "level": self.level}
        self._root.attrs.update(self._ome({"multiscales": [multiscale], "image-label": label}, tilewise))

    def finalize(self) -> tuple[Path, ...]:
        """Fill the other levels, write the metadata, move the label image into place and list it.

        Returns:
            ``(path,)``.

        Raises:
            SinkFinalizedError: if called twice or after abort.
            SinkError: if writing, the rename or the listing fails (the temporary store is removed).
        """
        self._begin_finalize()
        try:
            for i in range(self.level + 1, len(self.levels)):  # coarser: each from the next finer
                self._resample(i, i - 1)
            for i in range(self.level - 1, -1, -1):  # finer: from the segmented level
                self._resample(i, self.level)
            self._write_metadata()
            with _locked(self.path.parent):
                publish(self.tmp, self.path)
                self._labels_group.add(self.path.name)
        except SinkError:
            self.abort()
            raise
        except Exception as e:
            self.abort()
            raise sink_error(self.path, e, "finishing") from e
        log.info("wrote label image %s of %s", self.path.name, self.image)
        return (self.path,)

    def abort(self) -> None:
        """Remove the temporary store, and ``labels/`` if this sink made it and it is empty."""
        self._closed = True
        shutil.rmtree(self.tmp, ignore_errors=True)
        staging.release(self.tmp)  # its lock file goes too, or the folder would not be empty
        if self._made_folder and not self.path.exists():
            try:
                self.path.parent.rmdir()
            except OSError:  # something else is in it now
                pass
