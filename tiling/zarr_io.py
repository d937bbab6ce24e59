"""Zarr and OME-Zarr: a windowed source and a label sink, on zarr-python 3.

The source reads plain arrays (zarr v2 or v3) and OME-Zarr multiscale images
(NGFF 0.4 on zarr v2, 0.5 on zarr v3). Its ``shape`` is spatial, (y, x) or
(z, y, x), like every tilewise source; a channel axis becomes the bands.

The sink writes NGFF 0.4 on zarr v2 (``/``-separated chunk keys): every
OME-Zarr reader in use (ome-zarr-py / napari, Fiji, QuPath, vizarr,
neuroglancer) opens 0.4, while 0.5 readers are still catching up. zarr-python
3's synchronous API keeps its event loop internal, so nothing async leaks out.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr
from zarr.errors import BaseZarrError

from tiling.cog import default_colormap
from tiling.errors import ConfigError, SinkError, SinkFinalizedError, SourceOpenError, SourceReadError, WindowError
from tiling.source import SourceBase, SourceSpec, empty_read
from tiling.stitch import LABEL_NODATA
from tiling.sink import Sink, check_writable
from tiling.windows import Window, clip, plan_windows

__all__ = ["OME_VERSION", "OmeZarrSink", "ZarrSource", "read_multiscales"]

log = logging.getLogger(__name__)

#: The NGFF version the sink writes (on zarr v2).
OME_VERSION = "0.4"
_SPATIAL = ("z", "y", "x")
#: omero display window of a uint8 channel.
_BYTE_WINDOW = {"start": 0, "end": 255, "min": 0, "max": 255}


def _open_node(path: Path) -> zarr.Array | zarr.Group:
    if not path.exists():
        raise SourceOpenError(f"{path}: no such Zarr store")
    try:
        return zarr.open(store=str(path), mode="r")
    except (BaseZarrError, FileNotFoundError, ValueError, KeyError) as e:
        raise SourceOpenError(f"{path}: not a Zarr array or group ({e}); pass a .zarr folder") from e


def read_multiscales(group: zarr.Group) -> dict[str, Any] | None:
    """The first ``multiscales`` entry of an OME-Zarr group (0.4 or 0.5 layout), or None."""
    attrs = dict(group.attrs)
    ome = attrs.get("ome", attrs)
    multiscales = ome.get("multiscales") if isinstance(ome, dict) else None
    return multiscales[0] if multiscales else None


def _transforms(items: Sequence[dict[str, Any]] | None, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    scale, translation = np.ones(ndim), np.zeros(ndim)
    for t in items or ():
        if t.get("type") == "scale" and "scale" in t:
            scale = scale * np.asarray(t["scale"], float)
        elif t.get("type") == "translation" and "translation" in t:
            translation = translation + np.asarray(t["translation"], float)
    return scale, translation


def _axis_roles(axes: Sequence[Any]) -> tuple[list[str], list[str], list[str | None]]:
    """Names, roles (``t``, ``c`` or ``s`` for space) and units of OME axes (dicts or strings)."""
    names, roles, units = [], [], []
    for a in axes:
        a = {"name": a} if isinstance(a, str) else a
        name = str(a["name"])
        kind = a.get("type") or {"t": "time", "c": "channel"}.get(name, "space")
        names.append(name)
        roles.append({"time": "t", "channel": "c"}.get(kind, "s"))
        units.append(a.get("unit"))
    return names, roles, units


class ZarrSource(SourceBase):
    """A Zarr array or OME-Zarr image read window by window, chunk-aligned.

    Args:
        path: the store (a folder); a group, or an array.
        level: for OME-Zarr, the multiscale level (index into ``datasets``); 0 when None.
        array: for a plain group, the array's path inside it (needed when it holds several).
        axes: axis names of a plain array, e.g. ``"yxc"`` for interleaved RGB;
            taken from OME metadata or zarr v3 ``dimension_names`` when None,
            else ``"yx"`` for 2-D and ``"zyx"`` for 3-D.

    Raises:
        SourceOpenError: if the store is missing, not Zarr, the level or array
            does not exist (the message lists those that do), or the axes are unusable.
    """

    kind = "zarr"

    def __init__(
        self,
        path: str | Path,
        level: int | None = None,
        array: str | None = None,
        axes: str | Sequence[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.level = level
        self.array_path = array
        node = _open_node(self.path)
        self.multiscales: dict[str, Any] | None = None
        self.levels: tuple[str, ...] = ()
        if isinstance(node, zarr.Group):
            node = self._resolve_group(node)
        elif level is not None or array is not None:
            raise SourceOpenError(f"{self.path}: is a plain array; it has no level {level} or array {array!r}")
        self._arr: zarr.Array = node
        names, roles, units = self._axes(axes)
        self._roles = roles
        self.array_axes = tuple(names)
        spatial = [i for i, r in enumerate(roles) if r == "s"]
        self._spatial = spatial
        self._channel = roles.index("c") if "c" in roles else None
        self.axes = tuple(names[i] for i in spatial)
        self.units = tuple(units[i] for i in spatial)
        self.shape = tuple(int(node.shape[i]) for i in spatial)
        self.count = int(node.shape[self._channel]) if self._channel is not None else 1
        self.block_shape = tuple(int(node.chunks[i]) for i in spatial)
        self.dtype = np.dtype(np.float32) if node.dtype.kind in "fc" else np.dtype(node.dtype)
        self.scale, self.translation = self._spatial_transforms(spatial)

    def _resolve_group(self, group: zarr.Group) -> zarr.Array:
        ms = read_multiscales(group)
        if ms is not None and self.array_path is None:
            self.multiscales = ms
            self.levels = tuple(str(d["path"]) for d in ms["datasets"])
            level = 0 if self.level is None else self.level
            if not (isinstance(level, int) and 0 <= level < len(self.levels)):
                raise SourceOpenError(
                    f"{self.path}: has no level {self.level!r}; levels 0 to {len(self.levels) - 1} exist "
                    f"(paths {', '.join(self.levels)}); pass one of them"
                )
            self.level = level
            return group[self.levels[level]]
        if self.level is not None:
            raise SourceOpenError(f"{self.path}: is not an OME-Zarr multiscale image; it has no level {self.level}")
        names = sorted(group.array_keys())
        if self.array_path is None:
            if len(names) != 1:
                raise SourceOpenError(f"{self.path}: holds arrays {names or 'none'}; pass array= one of them")
            self.array_path = names[0]
        try:
            node = group[self.array_path]
        except KeyError as e:
            raise SourceOpenError(f"{self.path}: has no array {self.array_path!r}; it holds {names}") from e
        if not isinstance(node, zarr.Array):
            raise SourceOpenError(f"{self.path}: {self.array_path!r} is a group, not an array; it holds {names}")
        return node

    def _axes(self, axes: str | Sequence[str] | None) -> tuple[list[str], list[str], list[str | None]]:
        ndim = self._arr.ndim
        if axes is not None:
            names, roles, units = _axis_roles(list(axes))
        elif self.multiscales is not None and "axes" in self.multiscales:
            names, roles, units = _axis_roles(self.multiscales["axes"])
        elif getattr(self._arr.metadata, "dimension_names", None):
            names, roles, units = _axis_roles(list(self._arr.metadata.dimension_names))
        else:
            names, roles, units = _axis_roles(list(_SPATIAL[-ndim:]) if ndim in (2, 3) else ["?"] * ndim)
        n_space = roles.count("s")
        if len(names) != ndim or n_space not in (2, 3) or roles.count("c") > 1:
            raise SourceOpenError(
                f"{self.path}: cannot use axes {names} for an array of shape {self._arr.shape}; "
                "pass axes= with 2 or 3 of z, y, x and at most one c, e.g. axes='yxc'"
            )
        for i, r in enumerate(roles):
            if r == "t" and self._arr.shape[i] != 1:
                raise SourceOpenError(f"{self.path}: time axis has {self._arr.shape[i]} points; only one is supported")
        return names, roles, units

    def _spatial_transforms(self, spatial: list[int]) -> tuple[tuple[float, ...], tuple[float, ...]]:
        ndim = self._arr.ndim
        if self.multiscales is None:
            return (1.0,) * len(spatial), (0.0,) * len(spatial)
        ds = self.multiscales["datasets"][self.level]
        s, t = _transforms(ds.get("coordinateTransformations"), ndim)
        gs, gt = _transforms(self.multiscales.get("coordinateTransformations"), ndim)
        scale, translation = s * gs, t * gs + gt
        return tuple(float(scale[i]) for i in spatial), tuple(float(translation[i]) for i in spatial)

    def spec(self) -> SourceSpec:
        """A picklable description to reopen this source in another process."""
        options = {"level": self.level, "array": self.array_path, "axes": list(self.array_axes)}
        return SourceSpec(path=str(self.path), kind=self.kind, options=options)

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read a spatial window, touching only the chunks it overlaps.

        Returns:
            data (bands, *window.shape) in :attr:`dtype`, 0 where invalid, and
            valid (*window.shape) bool, False outside the array and at
            non-finite values.

        Raises:
            WindowError: if the window's axis count differs from the spatial axes'.
            SourceReadError: if a chunk cannot be read or decoded.
        """
        if window.ndim != len(self.shape):
            raise WindowError(f"{self.path}: needs a {len(self.shape)}-axis window {self.axes}, got {window}")
        data, valid, inside = empty_read(window, self.shape, self.count, self.dtype)
        if inside is None:
            return data, valid
        spatial = iter(inside.to_slices())
        index = tuple(0 if r == "t" else slice(None) if r == "c" else next(spatial) for r in self._roles)
        try:
            block = np.asarray(self._arr[index])
        except (BaseZarrError, OSError, ValueError, RuntimeError) as e:
            raise SourceReadError(f"{self.path}: cannot read window {inside} ({e})") from e
        kept = [r for r in self._roles if r != "t"]
        block = np.moveaxis(block, kept.index("c"), 0) if "c" in kept else block[np.newaxis]
        block = block.astype(self.dtype, copy=False)
        mask = np.ones(inside.shape, bool)
        if self.dtype.kind == "f":
            mask &= np.isfinite(block).all(axis=0)
            block = np.where(mask, block, 0)
        rel = inside.relative_to(window).to_slices()
        data[(slice(None), *rel)] = block
        valid[rel] = mask
        return data, valid

    def __repr__(self) -> str:
        return f"ZarrSource({str(self.path)!r}, level={self.level}, axes={self.axes}, shape={self.shape})"


def _label_colors(class_names: Sequence[str]) -> list[dict[str, Any]]:
    """``image-label`` colours: the COG sink's palette, nodata transparent."""
    cmap = default_colormap(len(class_names))
    return [{"label-value": int(k), "rgba": list(rgba)} for k, rgba in sorted(cmap.items())]


def _hex_colors(classes: int) -> list[str]:
    """``omero`` channel colours (RRGGBB) from the same palette."""
    cmap = default_colormap(classes)
    return [f"{cmap[k][0]:02X}{cmap[k][1]:02X}{cmap[k][2]:02X}" for k in range(classes)]


class OmeZarrSink(Sink):
    """Write a uint8 label image (255 = nodata) as OME-Zarr (NGFF 0.4, zarr v2).

    Level ``0`` has the given shape and chunks; :meth:`finalize` adds level
    ``1``, y and x halved by nearest-neighbour (z kept), in one chunk-by-chunk
    pass over level 0 (memory: a few chunks). The group carries
    ``multiscales`` (axes, scale and translation per level), ``image-label``
    (a colour and the class name per label value) and ``tilewise``
    (class names, nodata). With ``save_probs`` the subgroup ``probs`` is an
    OME image with a channel axis: probability x 255 as uint8, level 0 only.

    Everything is written to a hidden sibling folder that is renamed to
    ``path`` by :meth:`finalize`, so ``path`` only ever holds a complete image.
    Writes should come from one process (zarr chunk writes are not locked).

    Args:
        path: the output folder, e.g. ``mask.ome.zarr``.
        shape: spatial shape, (y, x) or (z, y, x).
        chunks: chunk shape, same axes (use the source's chunks).
        scale: physical size of a voxel per axis; 1 when None.
        translation: physical offset per axis; omitted when None.
        axes: axis names, ``("y", "x")`` or ``("z", "y", "x")`` by default.
        class_names: one name per class (label value k is ``class_names[k]``).
        units: OME unit names per axis (e.g. ``"millimeter"``), or None.
        save_probs: also store class probabilities.
        downsample: write level 1 at finalize.

    Raises:
        SinkError: if the parent folder is missing or not writable.
        ConfigError: if shapes, chunks, scale and axes disagree in length.
    """

    def __init__(
        self,
        path: str | Path,
        shape: Sequence[int],
        chunks: Sequence[int],
        scale: Sequence[float] | None = None,
        translation: Sequence[float] | None = None,
        axes: Sequence[str] | None = None,
        class_names: Sequence[str] = (),
        units: Sequence[str | None] | None = None,
        save_probs: bool = False,
        downsample: bool = True,
    ) -> None:
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        nd = len(self.shape)
        self.chunks = tuple(min(int(c), n) for c, n in zip(chunks, self.shape))
        self.axes = tuple(axes) if axes is not None else _SPATIAL[-nd:]
        self.scale = tuple(float(s) for s in scale) if scale is not None else (1.0,) * nd
        self.translation = tuple(float(t) for t in translation) if translation is not None else None
        self.units = tuple(units) if units is not None else (None,) * nd
        self.class_names = list(class_names)
        self.downsample = downsample
        lengths = {len(chunks), len(self.axes), len(self.scale), len(self.units), len(self.translation or self.shape)}
        if nd not in (2, 3) or lengths != {nd}:
            raise ConfigError(
                f"{self.path}: shape {self.shape}, chunks {tuple(chunks)}, axes {self.axes}, scale {self.scale}, "
                f"translation {self.translation} and units {self.units} must all have 2 or 3 entries"
            )
        check_writable(self.path, folder=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.part")
        self._closed = False
        try:
            self._root = zarr.open_group(store=str(self.tmp), mode="w-", zarr_format=2)
            self._labels = self._create(self._root, "0", self.shape, self.chunks, LABEL_NODATA)
            self._probs = self._create_probs() if save_probs else None
        except Exception as e:
            self.abort()
            raise SinkError(f"{self.path}: cannot create the Zarr store ({e})") from e

    @staticmethod
    def _create(group: zarr.Group, name: str, shape: tuple[int, ...], chunks: tuple[int, ...], fill: int) -> zarr.Array:
        return group.create_array(
            name, shape=shape, chunks=chunks, dtype="uint8", fill_value=fill,
            compressors=numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE),
            chunk_key_encoding={"name": "v2", "separator": "/"},
        )  # fmt: skip

    def _create_probs(self) -> zarr.Array:
        group = self._root.create_group("probs")
        k = len(self.class_names)
        arr = self._create(group, "0", (k, *self.shape), (1, *self.chunks), 0)
        axes = [{"name": "c", "type": "channel"}, *self._axes_meta()]
        transforms = [{"type": "scale", "scale": [1.0, *self.scale]}]
        if self.translation is not None:
            transforms.append({"type": "translation", "translation": [0.0, *self.translation]})
        group.attrs.update({
            "multiscales": [{"version": OME_VERSION, "name": "probabilities", "axes": axes,
                             "datasets": [{"path": "0", "coordinateTransformations": transforms}]}],
            "omero": {"channels": [{"label": n, "color": color, "window": _BYTE_WINDOW}
                                   for n, color in zip(self.class_names, _hex_colors(k))]},
            "tilewise": {"class_names": self.class_names, "scale": "probability = value / 255"},
        })  # fmt: skip
        return arr

    def _axes_meta(self) -> list[dict[str, Any]]:
        out = []
        for name, unit in zip(self.axes, self.units):
            item: dict[str, Any] = {"name": name, "type": "space"}
            if unit:
                item["unit"] = unit
            out.append(item)
        return out

    def _level_factors(self, level: int) -> tuple[int, ...]:
        """Per-axis downsampling of ``level``: y and x halve per level, z stays."""
        nd = len(self.shape)
        return tuple(2**level if i >= nd - 2 else 1 for i in range(nd))

    def _dataset(self, level: int) -> dict[str, Any]:
        f = self._level_factors(level)
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": [s * k for s, k in zip(self.scale, f)]}]
        if self.translation is not None:
            # nearest keeps every 2nd pixel starting at 0, so pixel 0 of each level sits at the same place
            transforms.append({"type": "translation", "translation": list(self.translation)})
        return {"path": str(level), "coordinateTransformations": transforms}

    def _write_metadata(self, levels: int) -> None:
        self._root.attrs.update({
            "multiscales": [{
                "version": OME_VERSION, "name": self.path.name, "axes": self._axes_meta(),
                "datasets": [self._dataset(i) for i in range(levels)],
                "type": "nearest", "metadata": {"method": "numpy strided slicing (nearest)"},
            }],
            "image-label": {"version": OME_VERSION, "colors": _label_colors(self.class_names),
                            "properties": [*({"label-value": k, "class": n} for k, n in enumerate(self.class_names)),
                                           {"label-value": LABEL_NODATA, "class": "nodata"}]},
            "tilewise": {"class_names": self.class_names, "nodata": LABEL_NODATA},
        })  # fmt: skip

    def write(self, window: Window, labels: np.ndarray, probs: np.ndarray | None = None) -> None:
        """Write one block: labels (*window.shape) uint8, probs (K, *window.shape) in [0, 1] or None.

        Raises:
            SinkFinalizedError: after :meth:`finalize` or :meth:`abort`.
            SinkError: if the window leaves the image or the arrays have the wrong shape.
        """
        self._check_block(window, labels)
        self._labels[window.to_slices()] = labels.astype(np.uint8, copy=False)
        if self._probs is not None and probs is not None:
            scaled = np.rint(np.clip(probs, 0.0, 1.0) * 255).astype(np.uint8)
            self._probs[(slice(None), *window.to_slices())] = scaled

    def _write_level1(self) -> int:
        """Add level 1 (nearest, y and x halved) chunk by chunk; returns the level count."""
        f = self._level_factors(1)
        shape = tuple(-(-n // k) for n, k in zip(self.shape, f))
        if not self.downsample or shape == self.shape:
            return 1
        chunks = tuple(min(c, n) for c, n in zip(self.chunks, shape))
        level1 = self._create(self._root, "1", shape, chunks, LABEL_NODATA)
        for w in plan_windows(shape, chunks, chunks, edge="pad"):
            w = clip(w, shape)
            src = tuple(slice(a * k, e * k, k) for a, e, k in zip(w.start, w.stop, f))
            level1[w.to_slices()] = self._labels[src]
        return 2

    def finalize(self) -> Path:
        """Write level 1 and the metadata, then move the store to ``path``; returns ``path``.

        An existing store at ``path`` is replaced.

        Raises:
            SinkFinalizedError: if called twice or after abort.
            SinkError: if writing or the rename fails (the temporary store is removed).
        """
        if self._closed:
            raise SinkFinalizedError(f"{self.path}: finalised twice")
        self._closed = True
        try:
            self._write_metadata(self._write_level1())
            _publish(self.tmp, self.path)
        except Exception as e:
            self.abort()
            raise SinkError(f"{self.path}: cannot finish the Zarr store ({e})") from e
        log.info("wrote %s", self.path)
        return self.path

    def abort(self) -> None:
        """Remove the temporary store; ``path`` is never touched."""
        self._closed = True
        shutil.rmtree(self.tmp, ignore_errors=True)

    @classmethod
    def like(cls, path: str | Path, source: ZarrSource, class_names: Sequence[str], **kwargs: Any) -> OmeZarrSink:
        """A sink with a Zarr source's spatial shape, chunks, axes, units, scale and translation."""
        return cls(
            path, source.shape, source.block_shape, scale=source.scale, translation=source.translation,
            axes=source.axes, units=source.units, class_names=class_names, **kwargs,
        )  # fmt: skip


def _publish(tmp: Path, final: Path) -> None:
    """Rename folder ``tmp`` to ``final``, replacing an old ``final`` only after the new one is whole."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except OSError:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
