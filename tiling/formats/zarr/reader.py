"""Zarr and OME-Zarr source on zarr-python 3: windowed, chunk-aligned reads.

The source reads plain arrays (zarr v2 or v3) and OME-Zarr multiscale images
(NGFF 0.4 on zarr v2, 0.5 on zarr v3). Its ``shape`` is spatial, (y, x) or
(z, y, x), like every tilewise source; a channel axis becomes the bands.
zarr-python 3's synchronous API keeps its event loop internal, so nothing
async leaks out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.errors import BaseZarrError

from tiling.core.windows import Window
from tiling.errors import SourceOpenError, SourceReadError, WindowError
from tiling.formats.base import ComplexPart, SourceBase, check_complex, empty_read, real_float32
from tiling.formats.reference import ArrayTransform
from tiling.formats.zarr import ZarrOptions

__all__ = ["ZarrSource", "axis_roles", "compose_transforms", "read_multiscales"]

log = logging.getLogger(__name__)

_SPATIAL = ("z", "y", "x")


def _open_node(path: Path) -> zarr.Array | zarr.Group:
    if not path.exists():
        raise SourceOpenError(f"{path}: no such Zarr store")
    try:
        return zarr.open(store=str(path), mode="r")
    except (BaseZarrError, FileNotFoundError, ValueError, KeyError) as e:
        raise SourceOpenError(f"{path}: not a Zarr array or group ({e}); pass a .zarr folder") from e


@contextmanager
def _metadata(path: Path) -> Iterator[None]:
    """Turn the errors of malformed metadata (a missing key, a string where numbers belong) into one line."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise SourceOpenError(
            f"{path}: malformed Zarr/OME metadata ({type(e).__name__}: {e}); check its .zattrs or zarr.json"
        ) from e


def read_multiscales(group: zarr.Group) -> dict[str, Any] | None:
    """The first ``multiscales`` entry of an OME-Zarr group (0.4 or 0.5 layout), or None."""
    attrs = dict(group.attrs)
    ome = attrs.get("ome", attrs)
    multiscales = ome.get("multiscales") if isinstance(ome, dict) else None
    return multiscales[0] if multiscales else None


def compose_transforms(items: Sequence[dict[str, Any]] | None, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale, translation) of ``ndim`` axes that OME ``coordinateTransformations`` ``items`` compose to.

    Raises:
        ValueError: if a scale or translation does not have ``ndim`` values.
    """
    scale, translation = np.ones(ndim), np.zeros(ndim)
    for t in items or ():
        for kind in ("scale", "translation"):
            if t.get("type") == kind and kind in t:
                values = np.asarray(t[kind], float)
                if values.shape != (ndim,):
                    raise ValueError(f"a {kind} of {values.size} values for {ndim} axes")
                if kind == "scale":
                    scale = scale * values
                else:
                    translation = translation + values
    return scale, translation


def axis_roles(axes: Sequence[Any]) -> tuple[list[str], list[str], list[str | None]]:
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
        complex: what to make of complex values; complex arrays are refused when None.

    Raises:
        SourceOpenError: if the store is missing, not Zarr, the level or array
            does not exist (the message lists those that do), the axes are
            unusable, the values are not numbers (or complex with no
            ``complex`` given), or the OME scale or translation is not finite.
    """

    format = "zarr"

    def __init__(
        self,
        path: str | Path,
        level: int | None = None,
        array: str | None = None,
        axes: str | Sequence[str] | None = None,
        complex: ComplexPart | None = None,
    ) -> None:
        self.path = Path(path)
        self.level = level
        self.array_path = array
        node = _open_node(self.path)
        self.multiscales: dict[str, Any] | None = None
        self.levels: tuple[str, ...] = ()
        if isinstance(node, zarr.Group):
            with _metadata(self.path):
                node = self._resolve_group(node)
        elif level is not None or array is not None:
            raise SourceOpenError(f"{self.path}: is a plain array; it has no level {level} or array {array!r}")
        self._arr: zarr.Array = node
        with _metadata(self.path):
            names, roles, units = self._axes(axes)
        self._roles = roles
        self.array_axes = tuple(names)
        spatial = [i for i, r in enumerate(roles) if r == "s"]
        self._spatial = spatial
        self._channel = roles.index("c") if "c" in roles else None
        self.axes = tuple(names[i] for i in spatial)
        self.shape = tuple(int(node.shape[i]) for i in spatial)
        self.count = int(node.shape[self._channel]) if self._channel is not None else 1
        self.block_shape = tuple(int(node.chunks[i]) for i in spatial)
        stored = np.dtype(node.dtype)
        if stored.kind not in "biufc":
            raise SourceOpenError(f"{self.path}: holds {stored} values; tilewise reads numeric arrays only")
        check_complex(self.path, stored, complex)
        self._part = complex
        self.dtype = np.dtype(np.float32) if stored.kind in "fc" else stored
        with _metadata(self.path):
            scale, translation = self._spatial_transforms(spatial)
        self.reference = ArrayTransform(self.axes, scale, translation, tuple(units[i] for i in spatial))
        # only axes the caller gave go into the options: axes from the metadata come with their units
        self.options = ZarrOptions(
            level=self.level, array=self.array_path, axes=tuple(axes) if axes is not None else None, complex=complex
        )

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
            node = group.get(self.levels[level])
            if not isinstance(node, zarr.Array):
                raise SourceOpenError(f"{self.path}: level {level} ({self.levels[level]!r}) is missing or not an array")
            return node
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
            names, roles, units = axis_roles(list(axes))
        elif self.multiscales is not None and "axes" in self.multiscales:
            names, roles, units = axis_roles(self.multiscales["axes"])
        elif dimension_names := getattr(self._arr.metadata, "dimension_names", None):
            names, roles, units = axis_roles(list(dimension_names))
        else:
            names, roles, units = axis_roles(list(_SPATIAL[-ndim:]) if ndim in (2, 3) else ["?"] * ndim)
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
        s, t = compose_transforms(ds.get("coordinateTransformations"), ndim)
        gs, gt = compose_transforms(self.multiscales.get("coordinateTransformations"), ndim)
        scale, translation = s * gs, t * gs + gt
        if not (np.isfinite(scale).all() and (scale > 0).all() and np.isfinite(translation).all()):
            raise SourceOpenError(
                f"{self.path}: level {self.level}'s coordinateTransformations give scale {scale.tolist()} and "
                f"translation {translation.tolist()}; a scale must be finite and positive, a translation finite"
            )
        return tuple(float(scale[i]) for i in spatial), tuple(float(translation[i]) for i in spatial)

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
        if block.dtype.kind == "c" or (block.dtype.kind == "f" and block.dtype.itemsize > 4):
            block = real_float32(block, self.path, f"window {inside}", self._part)
        block = block.astype(self.dtype, copy=False)
        mask = np.ones(inside.shape, bool)
        if self.dtype.kind == "f":
            mask &= np.isfinite(block).all(axis=0)
            block = np.where(mask, block, 0)
        rel = inside.relative_to(window).to_slices()
        bands_rel = (slice(None), *rel)
        data[bands_rel] = block
        valid[rel] = mask
        return data, valid

    def __repr__(self) -> str:
        return f"ZarrSource({str(self.path)!r}, level={self.level}, axes={self.axes}, shape={self.shape})"
