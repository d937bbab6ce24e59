"""OME-Zarr label sink on zarr-python 3.

It writes NGFF 0.4 on zarr v2 (``/``-separated chunk keys): every OME-Zarr
reader in use (ome-zarr-py / napari, Fiji, QuPath, vizarr, neuroglancer)
opens 0.4, while 0.5 readers are still catching up.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr

from tiling.core import staging
from tiling.core.labels import LABEL_NODATA, RGB, colormap, default_colormap
from tiling.core.windows import Window, clip, plan_windows
from tiling.errors import ConfigError, SinkError
from tiling.formats.base import Sink, SinkRequest, Source, check_writable, sink_error, temp_name
from tiling.formats.zarr import FORMAT

__all__ = ["OME_VERSION", "OmeZarrSink", "hex_colors", "label_colors", "publish"]

log = logging.getLogger(__name__)

#: The NGFF version the sink writes (on zarr v2).
OME_VERSION = "0.4"
_SPATIAL = ("z", "y", "x")
#: omero display window of a uint8 channel.
_BYTE_WINDOW = {"start": 0, "end": 255, "min": 0, "max": 255}
#: Chunk edge for sources whose storage blocks are not chunks of a mask (one-row strips, single slices).
DEFAULT_CHUNK = 256


def label_colors(class_names: Sequence[str], colors: Sequence[RGB] | None = None) -> list[dict[str, Any]]:
    """``image-label`` colours: ``colors`` (one per class; the COG sink's palette when None), nodata transparent."""
    cmap = colormap(colors) if colors is not None else default_colormap(len(class_names))
    return [{"label-value": int(k), "rgba": list(rgba)} for k, rgba in sorted(cmap.items())]


def hex_colors(classes: int, colors: Sequence[RGB] | None = None) -> list[str]:
    """``omero`` channel colours (RRGGBB) from the same colours."""
    cmap = colormap(colors) if colors is not None else default_colormap(classes)
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
        class_colors: Sequence[RGB] | None = None,
    ) -> None:
        self.path = Path(path)
        self.class_colors = list(class_colors) if class_colors is not None else None
        self.shape = tuple(int(n) for n in shape)
        nd = len(self.shape)
        self.chunks = tuple(min(int(c), n) for c, n in zip(chunks, self.shape))
        self.block = self.chunks
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
        self.tmp = temp_name(self.path, ".part")
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
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": [1.0, *self.scale]}]
        if self.translation is not None:
            transforms.append({"type": "translation", "translation": [0.0, *self.translation]})
        group.attrs.update({
            "multiscales": [{"version": OME_VERSION, "name": "probabilities", "axes": axes,
                             "datasets": [{"path": "0", "coordinateTransformations": transforms}]}],
            "omero": {"channels": [{"label": n, "color": color, "window": _BYTE_WINDOW}
                                   for n, color in zip(self.class_names, hex_colors(k, self.class_colors))]},
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
            "image-label": {"version": OME_VERSION, "colors": label_colors(self.class_names, self.class_colors),
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
        try:
            self._labels[window.to_slices()] = labels.astype(np.uint8, copy=False)
            if self._probs is not None and probs is not None:
                scaled = np.rint(np.clip(probs, 0.0, 1.0) * 255).astype(np.uint8)
                classes_window = (slice(None), *window.to_slices())
                self._probs[classes_window] = scaled
        except (OSError, RuntimeError, ValueError) as e:  # zarr reports store failures in these
            raise sink_error(self.path, e) from e

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

    def finalize(self) -> tuple[Path, ...]:
        """Write level 1 and the metadata, then move the store to ``path``; returns ``(path,)``.

        An existing store at ``path`` is replaced only if tilewise wrote it
        (its attributes carry the ``tilewise`` entry); anything else is refused.

        Raises:
            SinkFinalizedError: if called twice or after abort.
            SinkError: if writing or the rename fails (the temporary store is removed).
        """
        self._begin_finalize()
        try:
            self._write_metadata(self._write_level1())
            publish(self.tmp, self.path)
        except SinkError:
            self.abort()
            raise
        except Exception as e:
            self.abort()
            raise sink_error(self.path, e, "finishing") from e
        log.info("wrote %s", self.path)
        return (self.path,)

    def abort(self) -> None:
        """Remove the temporary store; ``path`` is never touched."""
        self._closed = True
        shutil.rmtree(self.tmp, ignore_errors=True)

    @classmethod
    def for_source(cls, path: Path, source: Source, request: SinkRequest) -> Sink:
        """A mask with ``source``'s spatial shape and its physical placement.

        A Zarr source lends its chunks, axes, units, scale and translation; a
        DICOM volume its spacing and origin (mm); a map raster keeps unit pixels.
        A ``path`` in the ``labels`` group of an OME-Zarr image
        (``image.ome.zarr/labels/<name>``) is written as a label image of that
        image, which must be ``source``
        (:class:`~tiling.formats.zarr.labelimage.LabelImageSink`).

        Raises:
            ConfigError: if ``path`` is a label image of another image than ``source``.
        """
        from tiling.formats.zarr.labelimage import LabelImageSink, label_image_of

        if label_image_of(path) is not None:
            return LabelImageSink.for_source(path, source, request)
        shape = tuple(int(n) for n in source.shape)
        if source.format == "zarr":
            chunks = tuple(min(int(b), n) for b, n in zip(source.block_shape, shape))
        else:
            chunks = tuple(1 if len(shape) == 3 and a == 0 else min(DEFAULT_CHUNK, n) for a, n in enumerate(shape))
        t = source.reference.array_transform(len(shape))
        return cls(
            path, shape, chunks, scale=t.scale, translation=t.translation, axes=t.axes, units=t.units,
            class_names=request.class_names, save_probs=request.save_probs, class_colors=request.class_colors,
        )  # fmt: skip


def publish(tmp: Path, final: Path) -> None:
    """Rename folder ``tmp`` to ``final``, replacing an old ``final`` only after the new one is whole.

    Raises:
        SinkError: if ``final`` exists and is not a store tilewise wrote: it is never removed.
    """
    old = None
    if final.exists() or final.is_symlink():
        if final.is_symlink() or not FORMAT.owns or not FORMAT.owns(final):
            raise SinkError(f"{final}: exists and was not written by tilewise; it is left as it is")
        old = temp_name(final, ".old")
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except OSError:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
        staging.release(old)
