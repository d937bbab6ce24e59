"""Training data: scenes opened through the format registry, split without leaks, read tile by tile.

The driver plans, the Ray Data tasks read:

* :func:`open_scenes` opens every image and its labels through the registry
  (any format with a label reader), checks that they fit, and scans the
  labels once, window by window, for per-tile class counts: labels outside
  the classes are refused here, before any worker starts, and the counts
  drive class-balanced sampling and the empty-set check.
* :func:`plan` splits each scene into square blocks (or holds out whole
  scenes) and cuts tiles inside blocks only, so no tile crosses from a
  training block into a validation block (:func:`check_no_leak` proves it).
* :func:`read_batch` is the Ray Data UDF: it reopens sources from their
  specs, reads the image and label windows, maps labels to classes, marks
  nodata as ignored, normalises and augments. Nothing reads a whole scene.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from models import Normalization
from models.train import augment, build_augmentation
from pipeline.train.config import DataConfig, parse_label_map
from tiling.core import TileLayout, Window, plan_windows, sample_band_stats
from tiling.errors import ConfigError
from tiling.formats import SourceSpec, get_format, list_scenes, open_labels, open_source, spec_of
from tiling.formats.base import Source

__all__ = [
    "Plan",
    "Scene",
    "TileRef",
    "check_label_share",
    "check_no_leak",
    "crs_name",
    "epoch_rows",
    "open_scenes",
    "plan",
    "read_batch",
    "scene_normalization",
    "tile_window",
    "val_rows",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scene:
    """One image with its labels, as workers reopen them.

    Attributes:
        image: the image's spec.
        labels: the labels' spec.
        shape: spatial shape of the image.
        lut: raw label value -> class (or ignore index), for values 0..len-1;
            -1 marks a value that is no class (refused when met).
        channels: model input channels.
        volume: a (z, y, x) volume, tiled one slice thick.
    """

    image: SourceSpec
    labels: SourceSpec
    shape: tuple[int, ...]
    lut: np.ndarray
    channels: int
    volume: bool


@dataclass(frozen=True)
class TileRef:
    """A tile: scene index and window start; ``counts`` its labelled pixels per class."""

    scene: int
    start: tuple[int, ...]
    counts: np.ndarray | None = None


@dataclass(frozen=True)
class Plan:
    """The tiles of a run.

    Attributes:
        train: training tiles of the grid (with class counts).
        val: validation tiles (fixed every epoch).
        train_blocks: per scene, the blocks (windows) tiles may be drawn from.
        tile: tile size.
        class_pixels: labelled pixels per class in the training tiles.
    """

    train: list[TileRef]
    val: list[TileRef]
    train_blocks: list[list[Window]]
    tile: int
    class_pixels: np.ndarray


def _label_lut(cfg: DataConfig, value_map_in_reader: bool) -> np.ndarray:
    """Raw value -> class lookup for values 0..65535 (-1: not a class)."""
    lut = np.full(65536, -1, np.int16)
    lut[: cfg.classes] = np.arange(cfg.classes)
    # The ignore index is what a label becomes, not a raw value to drop silently: SpaceNet's
    # masks mark roads with 255. A raw 255 must be mapped (255:1, or 255:ignore); nodata is ignored anyway.
    if not value_map_in_reader:
        for key, cls in parse_label_map(cfg.label_map, cfg.ignore_index).items():
            try:
                raw = int(key)
            except ValueError:
                raise ConfigError(f"label_map: {key!r} is not a label value of a raster") from None
            if not 0 <= raw < lut.size:
                raise ConfigError(f"label_map: {raw} is not a label value (0..65535)")
            lut[raw] = cls
    return lut


def _layout(cfg: DataConfig, volume: bool) -> TileLayout:
    return TileLayout(0 if volume else None, 1, None if cfg.window is None else _bounds(cfg.window))


def _bounds(window: str) -> tuple[float, float]:
    from tiling.core import window_bounds

    return window_bounds(window)


def _pairs(cfg: DataConfig, images: Sequence[str], labels: Sequence[str]) -> list[tuple[str, str]]:
    """(image, labels) per scene, a folder of image/mask pairs expanded."""
    if len(images) == 1 and not labels:
        pairs = list_scenes(images[0])
        if pairs is None:
            raise ConfigError(f"{images[0]}: no labels given; pass --labels, or a folder with images/ and masks/")
        return [(str(i), str(m)) for i, m in pairs]
    return list(zip(images, labels))


def _open_scene(cfg: DataConfig, image_path: str, label_path: str) -> tuple[Source, Source, Scene]:
    image = open_source(image_path, bands=cfg.bands, series=cfg.series)
    try:
        value_map = parse_label_map(cfg.label_map, cfg.ignore_index) or None
        labels = open_labels(
            label_path, image, resample=cfg.resample_labels or None, attribute=cfg.label_attribute,
            value_map=value_map, name=cfg.label_name, all_touched=cfg.all_touched or None,
        )  # fmt: skip
    except BaseException:
        image.close()
        raise
    in_reader = "value_map" in get_format(labels.format).label_option_names()
    volume = len(image.shape) == 3
    scene = Scene(spec_of(image), spec_of(labels), tuple(image.shape), _label_lut(cfg, in_reader), image.count, volume)
    return image, labels, scene


def open_scenes(cfg: DataConfig) -> tuple[list[Scene], list[Scene]]:
    """Open and check the training and validation scenes (validation empty for a block split).

    Raises:
        TilingError: for a file that cannot be read or labels that do not fit their image.
        ConfigError: for scenes whose band counts differ.
    """
    out: list[list[Scene]] = []
    for images, labels in ((cfg.image, cfg.labels), (cfg.val_image, cfg.val_labels)):
        scenes = []
        for img, lab in _pairs(cfg, images, labels) if images else []:
            image, lbl, scene = _open_scene(cfg, img, lab)
            image.close()
            lbl.close()
            scenes.append(scene)
        out.append(scenes)
    train, val = out
    channels = {s.channels for s in train + val}
    if len(channels) > 1:
        raise ConfigError(f"image: scenes have different band counts {sorted(channels)}; choose bands with --bands")
    if cfg.split == "scene" and not val:
        if len(train) < 2:
            raise ConfigError("split: a scene split needs at least 2 scenes (or --val-image); use --split block")
        k = max(1, round(len(train) * cfg.val_fraction))
        train, val = train[:-k], train[-k:]
    return train, val


def scene_normalization(scenes: Sequence[Scene], cfg: DataConfig) -> Normalization:
    """Per-channel mean/std of the training scenes (a bounded sample of each), or fixed after a CT window."""
    channels = scenes[0].channels
    if cfg.window is not None:
        return Normalization((0.5,) * channels, (0.25,) * channels)
    means, variances = [], []
    for s in scenes:
        with s.image.open() as src:
            stats = sample_band_stats(src)
        means.append(np.asarray(stats.mean))
        variances.append(np.asarray(stats.std) ** 2)
    mean = np.mean(means, axis=0)
    var = np.mean([v + m**2 for v, m in zip(variances, means)], axis=0) - mean**2
    std = np.sqrt(np.maximum(var, 1e-12))
    std[std < 1e-6] = 1.0
    return Normalization(tuple(float(x) for x in mean), tuple(float(x) for x in std))


def _blocks(shape: tuple[int, ...], block: int) -> list[Window]:
    """Square blocks (one slice deep for volumes: all slices) covering the scene's rows and columns."""
    rows, cols = shape[-2:]
    out = []
    for r in range(0, rows, block):
        for c in range(0, cols, block):
            h, w = min(block, rows - r), min(block, cols - c)
            if len(shape) == 3:
                out.append(Window((0, r, c), (shape[0], h, w)))
            else:
                out.append(Window((r, c), (h, w)))
    return out


def _tiles_in(block: Window, tile: int) -> list[Window]:
    """Grid tiles inside ``block`` (shifted inward at its edges); none if the block is thinner than a tile."""
    h, w = block.shape[-2:]
    if h < tile or w < tile:
        return []
    if block.ndim == 3:
        inner = plan_windows((h, w), tile, tile)
        return [
            Window((z, block.start[1] + t.start[0], block.start[2] + t.start[1]), (1, tile, tile))
            for z in range(block.shape[0])
            for t in inner
        ]
    return [Window((block.start[0] + t.start[0], block.start[1] + t.start[1]), (tile, tile)) for t in plan_windows((h, w), tile, tile)]  # fmt: skip


def _count(scene: Scene, image: Source, labels: Source, window: Window, classes: int, ignore: int) -> np.ndarray:
    """Labelled pixels per class in ``window`` where the image has data, refusing values that are no class."""
    raw, valid = labels.read(window)
    raw = raw[0].astype(np.int64)
    inside = (raw >= 0) & (raw < scene.lut.size)
    mapped = np.where(inside, scene.lut[np.clip(raw, 0, scene.lut.size - 1)], -1)
    bad = valid & (mapped < 0)
    if bad.any():
        value = int(raw[bad][0])
        raise ConfigError(
            f"{labels.path}: label value {value} is not a class (classes are 0 to {classes - 1}, "
            f"{ignore} is ignored); map it with --label-map {value}:CLASS or {value}:ignore"
        )
    counted = valid & (mapped != ignore)
    if counted.any():  # a label over the image's nodata trains nothing (read_batch ignores it)
        _, image_valid = image.read(window)
        counted &= image_valid.reshape(counted.shape)
    return np.bincount(mapped[counted].ravel(), minlength=classes)[:classes]


def _scan(scenes: Sequence[Scene], windows: Sequence[list[Window]], cfg: DataConfig, what: str) -> list[TileRef]:
    tiles = []
    total = sum(len(w) for w in windows)
    with tqdm(total=total, desc=f"scanning {what} labels", unit="tile", disable=total < 64, leave=False) as bar:
        for i, (scene, wins) in enumerate(zip(scenes, windows)):
            with scene.image.open() as image, scene.labels.open_labels(image) as labels:
                for w in wins:
                    counts = _count(scene, image, labels, w, cfg.classes, cfg.ignore_index)
                    tiles.append(TileRef(i, w.start, counts))
                    bar.update(1)
    return tiles


def plan(train: Sequence[Scene], val: Sequence[Scene], cfg: DataConfig, seed: int) -> tuple[Plan, list[Scene]]:
    """Split into blocks, cut tiles inside them, and scan their labels.

    With a block split, each scene's blocks are shuffled with ``seed`` and
    ``val_fraction`` of them (at least one) hold validation tiles; with a
    scene split, the validation scenes are tiled whole.

    Returns:
        The plan, and every scene in index order (training scenes, then validation scenes).

    Raises:
        ConfigError: if there is no labelled training tile, or no validation tile.
    """
    tile, rng = cfg.tile, np.random.default_rng(seed)
    scenes = list(train) + list(val)
    train_blocks: list[list[Window]] = []
    train_windows: list[list[Window]] = []
    val_windows: list[list[Window]] = []
    for s in train:
        blocks = [b for b in _blocks(s.shape, cfg.block_size) if min(b.shape[-2:]) >= tile]
        if cfg.split == "block":
            if len(blocks) < 2:
                raise ConfigError(
                    f"{s.image.path}: {s.shape[-1]}x{s.shape[-2]} px holds {len(blocks)} block(s) of "
                    f"{cfg.block_size} px; a block split needs 2 or more: use a smaller --block or --tile"
                )
            order = rng.permutation(len(blocks))
            k = min(len(blocks) - 1, max(1, round(len(blocks) * cfg.val_fraction)))
            held = {int(i) for i in order[:k]}
            val_windows.append([t for j, b in enumerate(blocks) if j in held for t in _tiles_in(b, tile)])
            blocks = [b for j, b in enumerate(blocks) if j not in held]
        train_blocks.append(blocks)
        train_windows.append([t for b in blocks for t in _tiles_in(b, tile)])
    if cfg.split == "scene":
        val_windows = [[]] * len(train) + [[t for b in _blocks(s.shape, cfg.block_size) for t in _tiles_in(b, tile)] for s in val]  # fmt: skip
    tr = _scan(train, train_windows, cfg, "training")
    va = _scan(scenes, val_windows, cfg, "validation")
    check_label_share(scenes, tr + va, cfg)
    tr = [t for t in tr if t.counts is not None and t.counts.sum() > 0]
    va = [t for t in va if t.counts is not None and t.counts.sum() > 0]
    if not tr:
        raise ConfigError(
            f"{train[0].labels.path}: the training set is empty: no training tile of {tile} px has a labelled "
            f"pixel where {train[0].image.path} has data (all nodata or ignored); check the image, --label-map "
            "and --tile"
        )
    if not va:
        raise ConfigError(f"{scenes[-1].labels.path}: no validation tile has a labelled pixel; raise --val-fraction")
    check_no_leak(tr, va, tile)
    class_pixels = np.sum([t.counts for t in tr if t.counts is not None], axis=0)
    log.info("%d training and %d validation tiles of %d px; class pixels %s", len(tr), len(va), tile, class_pixels)
    return Plan(tr, va, train_blocks, tile, class_pixels), scenes


def check_label_share(scenes: Sequence[Scene], tiles: Sequence[TileRef], cfg: DataConfig) -> None:
    """Refuse a label file whose classes but its most common one cover less than ``cfg.min_label_share``.

    Labels that miss their image (a GeoJSON in projected coordinates without a
    ``crs`` member is read as WGS 84, shapes elsewhere, null geometries) are
    background everywhere: a model of one class would score mIoU 1.0.

    Raises:
        ConfigError: naming the labels, the share, the labels' CRS and the image's.
    """
    if cfg.min_label_share <= 0:
        return
    per_scene: dict[int, np.ndarray] = {}
    for t in tiles:
        if t.counts is not None:
            per_scene[t.scene] = per_scene.get(t.scene, 0) + t.counts
    for i, counts in sorted(per_scene.items()):
        total = int(counts.sum())
        if total == 0:
            continue  # no labelled pixel at all: the empty-set checks say so
        top = int(np.argmax(counts))
        share = (total - int(counts[top])) / total
        if share < cfg.min_label_share:
            scene = scenes[i]
            raise ConfigError(
                f"{scene.labels.path}: classes other than {cfg.names[top]} cover {share:.2%} of its {total} "
                f"labelled pixels, below --min-label-share {cfg.min_label_share:g}: labels that miss the image look "
                f"like this (labels in {_label_crs(scene)}, image {scene.image.path} in {_image_crs(scene)}); "
                "check the labels' CRS, or pass --min-label-share 0 for a scene of one class"
            )


def _label_crs(scene: Scene) -> str:
    """The CRS the labels' file declares (as its reader found it), or the image's when they share its grid."""
    with scene.image.open() as image, scene.labels.open_labels(image) as labels:
        found = getattr(labels, "found_crs", None)
    return str(found) if found else _image_crs(scene)


def _image_crs(scene: Scene) -> str:
    with scene.image.open() as image:
        ref = image.reference
    return crs_name(getattr(ref, "crs", None))


def crs_name(wkt: str | None) -> str:
    """A CRS as people name it: ``EPSG:32616``, else its PROJ string; ``no CRS`` for None."""
    if not wkt:
        return "no CRS"
    from rasterio.crs import CRS

    crs = CRS.from_user_input(wkt)
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else (crs.to_proj4() or crs.to_wkt())


def tile_window(ref: TileRef, tile: int, volume: bool) -> Window:
    """The window of a tile: (tile, tile), or one slice thick in a volume."""
    return Window(ref.start, (1, tile, tile) if volume else (tile, tile))


def check_no_leak(train: Sequence[TileRef], val: Sequence[TileRef], tile: int) -> None:
    """Refuse a plan in which a validation pixel lies in a training tile.

    Raises:
        ConfigError: naming the first overlapping pair.
    """
    by_scene: dict[int, list[TileRef]] = {}
    for t in train:
        by_scene.setdefault(t.scene, []).append(t)
    for v in val:
        for t in by_scene.get(v.scene, ()):
            if all(abs(a - b) < (1 if i == 0 and len(v.start) == 3 else tile) for i, (a, b) in enumerate(zip(v.start, t.start))):  # fmt: skip
                raise ConfigError(
                    f"split: validation tile at {v.start} overlaps training tile at {t.start} in scene {v.scene}; "
                    "validation pixels would be in training tiles"
                )


def epoch_rows(
    p: Plan, scenes: Sequence[Scene], cfg: DataConfig, epoch: int, seed: int, per_step: int
) -> list[dict[str, Any]]:
    """The training rows of one epoch, a multiple of ``per_step`` (workers x batch x accumulation).

    Grid windows are the same every epoch; ``random`` windows draw fresh
    offsets inside the training blocks; ``balanced`` draws tiles with weights
    that favour rare classes. Every draw comes from ``(seed, epoch)``, so a
    resumed run sees the same tiles.
    """
    rng = np.random.default_rng([seed, epoch])
    n = cfg.samples or len(p.train)
    if cfg.balanced:
        freq = p.class_pixels / max(p.class_pixels.sum(), 1)
        inv = np.where(freq > 0, 1.0 / np.maximum(freq, 1e-12), 0.0)
        w = np.array([(t.counts / max(t.counts.sum(), 1) * inv).sum() for t in p.train])  # type: ignore[union-attr]
        picks = rng.choice(len(p.train), size=n, p=w / w.sum())
        refs = [p.train[i] for i in picks]
    elif cfg.windows == "random":
        refs = []
        blocks = [(i, b) for i, bl in enumerate(p.train_blocks) for b in bl]
        area = np.array([b.shape[-1] * b.shape[-2] for _, b in blocks], float)
        for k in rng.choice(len(blocks), size=n, p=area / area.sum()):
            i, b = blocks[k]
            r = b.start[-2] + int(rng.integers(0, b.shape[-2] - p.tile + 1))
            c = b.start[-1] + int(rng.integers(0, b.shape[-1] - p.tile + 1))
            z = (b.start[0] + int(rng.integers(0, b.shape[0])),) if scenes[i].volume else ()
            refs.append(TileRef(i, (*z, r, c)))
    else:
        refs = (
            [p.train[i] for i in rng.permutation(len(p.train))]
            if cfg.samples is None
            else [p.train[i] for i in rng.choice(len(p.train), n)]
        )
    keep = len(refs) // per_step * per_step
    return [
        {
            "scene": r.scene,
            "start": list(r.start),
            "seed": int(rng.integers(0, 2**31 - 1)),
            "epoch": epoch,
            "pad": False,
        }
        for r in refs[:keep]
    ]


def val_rows(p: Plan, world: int) -> list[dict[str, Any]]:
    """The validation rows, padded to a multiple of ``world`` with rows that count nowhere."""
    rows = [{"scene": t.scene, "start": list(t.start), "seed": 0, "epoch": -1, "pad": False} for t in p.val]
    while len(rows) % world:
        rows.append({**rows[0], "pad": True})
    return rows


_OPEN: dict[tuple[str, str], tuple[Source, Source]] = {}


def _sources(scene: Scene) -> tuple[Source, Source]:
    """The scene's image and labels, opened once per worker process."""
    key = (scene.image.path, scene.labels.path)
    if key not in _OPEN:
        image = scene.image.open()
        _OPEN[key] = (image, scene.labels.open_labels(image))
    return _OPEN[key]


def read_batch(
    batch: dict[str, np.ndarray],
    scenes: Sequence[Scene],
    tile: int,
    normalization: Normalization,
    ignore_index: int,
    augment_preset: str,
    augment_custom: Sequence[dict[str, Any]],
    window: tuple[float, float] | None,
) -> dict[str, np.ndarray]:
    """Ray Data UDF: rows of (scene, start, seed, pad) in, ``image`` (n, C, t, t) float32
    normalised and augmented and ``label`` (n, t, t) int64 with ``ignore_index`` where nothing counts.
    """
    transform = build_augmentation(augment_preset, augment_custom, ignore_index)
    mean = np.asarray(normalization.mean, np.float32)[:, None, None]
    std = np.asarray(normalization.std, np.float32)[:, None, None]
    images, labels = [], []
    for scene_i, start, seed, pad in zip(batch["scene"], batch["start"], batch["seed"], batch["pad"]):
        scene = scenes[int(scene_i)]
        image, lbl = _sources(scene)
        w = tile_window(TileRef(int(scene_i), tuple(int(x) for x in start)), tile, scene.volume)
        layout = TileLayout(0 if scene.volume else None, 1, window)
        data, valid = layout.read(image, w)
        raw, lvalid = lbl.read(w) if not scene.volume else _label_slice(lbl, w)
        x = ((data.astype(np.float32) - mean) / std) * valid
        raw = raw[0].astype(np.int64)
        y = np.where((raw >= 0) & (raw < scene.lut.size), scene.lut[np.clip(raw, 0, scene.lut.size - 1)], ignore_index)
        y = np.where(valid & lvalid & (y >= 0), y, ignore_index).astype(np.uint8)
        if bool(pad):
            y[:] = ignore_index
        x, y = augment(transform, x.astype(np.float32), y, int(seed))
        images.append(x)
        labels.append(y.astype(np.int64))
    return {"image": np.stack(images), "label": np.stack(labels)}


def _label_slice(labels: Source, w: Window) -> tuple[np.ndarray, np.ndarray]:
    raw, valid = labels.read(w)
    return raw[:, 0], valid[0]


def iter_rows(rows: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Rows as Ray Data items (numpy-friendly)."""
    for r in rows:
        yield {**r, "start": np.asarray(r["start"], np.int64)}


def labels_path(scene: Scene) -> Path:
    """The scene's labels file (for messages)."""
    return Path(scene.labels.path)
