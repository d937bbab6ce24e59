"""Quicklook PNGs: the source, contrast-stretched (or through the CT window), with the mask on top and a legend.

Cheap for huge scenes. A COG mask over a GDAL-readable source is read
decimated to at most ``size`` pixels a side: GDAL serves such a read from
the overview closest to that size (every tilewise COG has overviews; a
source without them is read decimated from full resolution, which touches
every block once). A volume (a DICOM series, a multi-frame file or a 3-D
Zarr) becomes a triptych of its axial, coronal and sagittal mid-slices, each
drawn with its voxel spacing and fitted into ``size`` x ``size`` pixels (a
two-slice CT would otherwise make a panel tens of thousands of pixels wide);
the mask is read from the DICOM SEG (a few slices at a time) or the
OME-Zarr. Other 2-D masks (OME-Zarr) are read row by row at a stride,
through the format registry.

Colours are the run's class colours (the COG mask's colour table when none
are given). The PNG carries tilewise's mark in its ``Software`` text chunk
(so ``--overwrite`` may replace it, and nothing else) and appears only when
complete (written under a temporary name, then renamed).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo
from rasterio.enums import Resampling

from pipeline.products.files import check_product_path, quicklook_path_for
from tiling.core.intensity import window_bounds
from tiling.core.labels import LABEL_NODATA, RGB, class_color
from tiling.core.windows import Window
from tiling.errors import ConfigError
from tiling.formats import open_source
from tiling.formats.base import Source, staged_file
from tiling.formats.reference import VolumeGeometry
from tiling.version import mark

__all__ = ["DEFAULT_SIZE", "quicklook", "quicklook_path_for"]

log = logging.getLogger(__name__)

#: Longest side of a 2-D quicklook, and the height of each panel of a triptych, in pixels.
DEFAULT_SIZE = 1024
#: Opacity of the mask colours over the source.
OVERLAY_ALPHA = 0.45
#: Percentiles of the contrast stretch.
STRETCH = (2.0, 98.0)


def quicklook(
    source: str | Path,
    mask: str | Path,
    out: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    bands: Sequence[int] | None = None,
    window: str | None = None,
    size: int = DEFAULT_SIZE,
    class_colors: Sequence[RGB] | None = None,
    overwrite: bool = False,
    **reader_options: Any,
) -> Path:
    """Write a PNG of ``source`` with ``mask`` overlaid and a legend.

    Args:
        source: the image the mask was made from.
        mask: the mask (a COG ``.tif``, a DICOM SEG ``.dcm`` of a volume, or an OME-Zarr).
        out: the PNG; :func:`quicklook_path_for` the mask when None.
        class_names: names per class; ``class_k`` when None.
        bands: 1-based bands to show (three as RGB, else the first as grey);
            the first three (or one) when None.
        window: a CT intensity window (``"soft-tissue"`` or ``"low,high"``)
            instead of the percentile stretch.
        size: longest side of a 2-D quicklook, or of each panel of a triptych.
        class_colors: one RGB colour per class; the COG mask's colour table
            (else the default palette) when None.
        overwrite: replace an existing ``out`` that tilewise wrote (never another file).
        reader_options: the source's reader options (``series``, ``level``).

    Returns:
        The PNG's path.

    Raises:
        ConfigError: for a mask it cannot draw (a whole-slide DICOM SEG), or an
            existing ``out`` without ``overwrite``.
        SinkError: if ``out`` exists and tilewise did not write it.
    """
    source, mask = Path(source), Path(mask)
    out = Path(out) if out is not None else quicklook_path_for(mask)
    check_product_path(out, overwrite)
    bounds = window_bounds(window) if window else None
    lut = _lut(mask, class_colors)
    with open_source(source, **{k: v for k, v in reader_options.items() if v is not None}) as src:
        volume = len(src.shape) == 3
        if volume:
            image = _triptych(src, mask, bands, bounds, size, lut)
        elif mask.suffix.lower() in (".tif", ".tiff"):
            src.close()
            image = _overview(source, mask, bands, bounds, size, lut)
        elif mask.suffix.lower() == ".dcm":
            raise ConfigError(f"{mask}: a quicklook of a whole-slide DICOM SEG is not supported; write .zarr instead")
        else:
            image = _strided(src, mask, bands, bounds, size, lut)
    names = list(class_names) if class_names else _names_of(mask)
    title = f"{source.name}  ->  {mask.name}" + ("  (axial | coronal | sagittal)" if volume else "")
    _save(_with_legend(image, names, title, lut), out)
    log.info("wrote %s", out)
    return out


def _save(image: Image.Image, out: Path) -> None:
    """Write the PNG with tilewise's mark under a temporary name, then rename it into place."""
    info = PngInfo()
    info.add_text("Software", mark())
    with staged_file(out, ".part.png") as tmp:
        image.save(tmp, format="PNG", pnginfo=info)  # optimize=True costs ~10 s per megapixel


def _lut(mask: Path, given: Sequence[RGB] | None) -> np.ndarray:
    """(256, 3) float32: the colour of every label value: ``given``, else the COG's colour table, else the palette."""
    lut = np.array([class_color(k) for k in range(256)], np.float32)
    if given:
        lut[: len(given)] = np.array([tuple(c)[:3] for c in given], np.float32)
    elif mask.suffix.lower() in (".tif", ".tiff"):
        try:
            with rasterio.open(mask) as ds:
                for k, rgba in ds.colormap(1).items():
                    if k != LABEL_NODATA and rgba[3]:
                        lut[k] = rgba[:3]
        except ValueError:  # no colour table
            pass
    return lut


def _names_of(mask: Path) -> list[str]:
    """The class names a tilewise mask records: COG band tags, SEG segment labels, OME-Zarr attributes."""
    suffix = mask.suffix.lower()
    if suffix in (".tif", ".tiff"):
        with rasterio.open(mask) as ds:
            tags = ds.tags(1)
        return [tags[f"CLASS_{k}"] for k in range(256) if f"CLASS_{k}" in tags]
    if suffix == ".dcm":
        import pydicom

        ds = pydicom.dcmread(mask, stop_before_pixels=True)
        return [str(s.SegmentLabel) for s in sorted(ds.SegmentSequence, key=lambda s: int(s.SegmentNumber))]
    if suffix == ".zarr":
        import zarr

        meta = dict(zarr.open_group(str(mask), mode="r").attrs).get("tilewise")
        names = meta.get("class_names") if isinstance(meta, dict) else None
        return [str(n) for n in names] if isinstance(names, list) else []
    return []


def _fit(rows: int, cols: int, size: int) -> tuple[int, int]:
    scale = min(1.0, size / max(rows, cols))
    return max(1, round(rows * scale)), max(1, round(cols * scale))


Bounds = tuple[float, float] | None


def _stretch(data: np.ndarray, valid: np.ndarray, bounds: Bounds) -> np.ndarray:
    """(bands, rows, cols) -> (rows, cols, 3) uint8: the CT window, or a 2-98 % stretch per band."""
    data = data.astype(np.float32)
    bands = int(data.shape[0])
    out = np.zeros(data.shape, np.float32)
    for b in range(bands):
        if bounds is not None:
            low, high = bounds
        else:
            values = data[b][valid] if valid.any() else data[b].ravel()
            low, high = _percentiles(values)
        out[b] = np.clip((data[b] - low) / ((high - low) or 1.0), 0.0, 1.0)
    out[:, ~valid] = 0.0
    rgb = out if bands == 3 else np.repeat(out[:1], 3, axis=0)
    return np.moveaxis(np.rint(rgb * 255).astype(np.uint8), 0, -1)


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    """The stretch's (low, high): the 2nd and 98th percentiles, or (0, 1) of nothing."""
    if not values.size:
        return 0.0, 1.0
    low, high = np.percentile(values, STRETCH)
    return float(low), float(high)


def _overlay(rgb: np.ndarray, labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Blend the class colours (``lut``, one per label value) of ``labels`` (rows, cols) into ``rgb``;
    nodata stays the source.
    """
    shown = labels != LABEL_NODATA
    out = rgb.astype(np.float32)
    out[shown] = (1 - OVERLAY_ALPHA) * out[shown] + OVERLAY_ALPHA * lut[labels[shown]]
    return np.rint(out).astype(np.uint8)


def _pick_bands(count: int, bands: Sequence[int] | None) -> list[int]:
    chosen = list(bands) if bands else list(range(1, count + 1))
    return chosen[:3] if len(chosen) >= 3 else chosen[:1]


def _overview(
    source: Path, mask: Path, bands: Sequence[int] | None, bounds: Bounds, size: int, lut: np.ndarray
) -> Image.Image:
    """A COG mask over a GDAL source, both read decimated (from their overviews where they have them)."""
    with rasterio.open(mask) as m:
        shape = _fit(m.height, m.width, size)
        labels = m.read(1, out_shape=shape, resampling=Resampling.nearest)
    with rasterio.open(source) as s:
        chosen = _pick_bands(s.count, bands)
        data = s.read(chosen, out_shape=(len(chosen), *shape), resampling=Resampling.nearest, masked=True)
    valid = np.asarray(~np.ma.getmaskarray(data).any(axis=0))
    return Image.fromarray(_overlay(_stretch(np.ma.getdata(data), valid, bounds), labels, lut))


def _strided(
    src: Source, mask: Path, bands: Sequence[int] | None, bounds: Bounds, size: int, lut: np.ndarray
) -> Image.Image:
    """A 2-D source and mask read through the registry, one row in every ``step``."""
    rows, cols = src.shape
    step = max(1, -(-max(rows, cols) // size))
    chosen = [b - 1 for b in _pick_bands(src.count, bands)]
    picks = range(0, rows, step)
    data = np.zeros((len(chosen), len(picks), -(-cols // step)), np.float32)
    valid = np.zeros(data.shape[1:], bool)
    labels = np.full(data.shape[1:], LABEL_NODATA, np.uint8)
    with open_source(mask) as m:
        for i, r in enumerate(picks):
            d, v = src.read(Window((r, 0), (1, cols)))
            data[:, i], valid[i] = d[chosen, 0, ::step], v[0, ::step]
            ld, lv = m.read(Window((r, 0), (1, cols)))
            labels[i] = np.where(lv[0, ::step], ld[0, 0, ::step], LABEL_NODATA)
    return Image.fromarray(_overlay(_stretch(data, valid, bounds), labels, lut))


def _mask_planes(mask: Path, src: Source, planes: dict[str, Window]) -> dict[str, np.ndarray]:
    """The mask's class labels on each plane (nodata and "no segment" as 255)."""
    if mask.suffix.lower() == ".dcm" and isinstance(src.reference, VolumeGeometry):
        return _seg_planes(mask, src.reference, planes)
    out = {}
    with open_source(mask) as m:
        for name, w in planes.items():
            data, valid = m.read(w)
            out[name] = np.where(valid, data[0], LABEL_NODATA).astype(np.uint8)
    return out


def _seg_planes(
    mask: Path, geometry: VolumeGeometry, planes: dict[str, Window], chunk: int = 32
) -> dict[str, np.ndarray]:
    """Planes of a tilewise DICOM SEG (segment k + 1 is class k), decoded ``chunk`` slices at a time."""
    import highdicom as hd

    seg = hd.seg.segread(mask)
    nz = geometry.shape[0]
    out = {name: np.full(w.shape, LABEL_NODATA, np.uint8) for name, w in planes.items()}
    multiframe = len(set(geometry.files)) == 1 and len(geometry.files) > 1
    for z0 in range(0, nz, chunk):
        zs = range(z0, min(nz, z0 + chunk))
        if multiframe:
            numbers = [geometry.frame_indices[z] + 1 for z in zs]
            block = seg.get_pixels_by_source_frame(geometry.sop_instance_uids[0], numbers, combine_segments=True)
        else:
            uids = [geometry.sop_instance_uids[z] for z in zs]
            block = seg.get_pixels_by_source_instance(uids, combine_segments=True)
        labels = np.where(block == 0, LABEL_NODATA, block.astype(np.int32) - 1).astype(np.uint8)
        for name, w in planes.items():
            z_lo, z_hi = max(w.start[0], z0), min(w.stop[0], zs.stop)
            if z_lo < z_hi:
                out[name][z_lo - w.start[0] : z_hi - w.start[0]] = labels[
                    z_lo - z0 : z_hi - z0, w.start[1] : w.stop[1], w.start[2] : w.stop[2]
                ]
    return out


def _triptych(
    src: Source, mask: Path, bands: Sequence[int] | None, bounds: Bounds, size: int, lut: np.ndarray
) -> Image.Image:
    """Axial, coronal and sagittal mid-slices side by side, each at its physical aspect within ``size`` x ``size``."""
    nz, ny, nx = src.shape
    planes = {
        "axial": Window((nz // 2, 0, 0), (1, ny, nx)),
        "coronal": Window((0, ny // 2, 0), (nz, 1, nx)),
        "sagittal": Window((0, 0, nx // 2), (nz, ny, 1)),
    }
    labels = _mask_planes(mask, src, planes)
    ref = src.reference
    sz, sy, sx = ref.spacing if isinstance(ref, VolumeGeometry) else ref.array_transform(3).scale
    reads = {name: src.read(w) for name, w in planes.items()}
    band = (_pick_bands(src.count, bands)[0] - 1) if src.count > 1 else 0
    if bounds is None:  # one stretch for the three planes, so they match
        bounds = _percentiles(np.concatenate([d[band][v] for d, v in reads.values()]))
    panels = []
    for name, (data, valid) in reads.items():
        axes = {"axial": (1, 2), "coronal": (0, 2), "sagittal": (0, 1)}[name]
        img = data[band : band + 1].reshape(1, *(planes[name].shape[a] for a in axes))
        v = valid.reshape(img.shape[1:])
        lab = labels[name].reshape(img.shape[1:])
        rgb = _overlay(_stretch(img, v, bounds), lab, lut)
        row_mm, col_mm = ((sy, sx), (sz, sx), (sz, sy))[list(planes).index(name)]
        if name != "axial":  # z runs up from the lowest slice: show the head at the top
            rgb = rgb[::-1]
        height_mm, width_mm = rgb.shape[0] * row_mm, rgb.shape[1] * col_mm
        scale = size / max(height_mm, width_mm)  # a few thick slices make a wide, low panel, not a huge one
        shape = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))
        panels.append(Image.fromarray(rgb).resize(shape, Image.Resampling.NEAREST))
    height = max(p.height for p in panels)
    canvas = Image.new("RGB", (sum(p.width for p in panels) + 8 * (len(panels) - 1), height), (0, 0, 0))
    x = 0
    for p in panels:
        canvas.paste(p, (x, (height - p.height) // 2))
        x += p.width + 8
    return canvas


def _with_legend(image: Image.Image, names: Sequence[str], title: str, lut: np.ndarray) -> Image.Image:
    """``image`` with a title bar above and a legend of class colours and names at the right."""
    font = ImageFont.load_default()
    line = 18
    legend_width = 40 + max((int(font.getlength(n)) for n in names), default=60)
    height = max(image.height + line + 8, line + 24 + len(names) * line)
    canvas = Image.new("RGB", (image.width + legend_width, height), (255, 255, 255))
    canvas.paste(image, (0, line + 8))
    draw = ImageDraw.Draw(canvas)
    draw.text((6, 4), title, fill=(0, 0, 0), font=font)
    for k, name in enumerate(names):
        y = line + 16 + k * line
        x = image.width + 10
        fill = tuple(int(c) for c in lut[k])
        draw.rectangle((x, y, x + 14, y + 12), fill=fill, outline=(0, 0, 0))
        draw.text((x + 20, y), name, fill=(0, 0, 0), font=font)
    return canvas
