"""albumentations presets: spatial transforms on image and mask together, photometric on the image only.

albumentations itself decides what a transform touches: spatial ones
(flips, 90° rotations, affine scale/rotate, crops) move the image and the
mask together, nearest-neighbour for the mask; pixel-level ones (brightness,
contrast, noise) change the image only. Pixels that a rotation or a scale
brings in from outside the tile get the ignore label, so they never count.

albumentations clips float images to [0, 1] in its photometric transforms,
so :func:`augment` maps the normalised tile (about N(0, 1) per band) into
[0, 1] by ``z / 8 + 0.5`` (±4 standard deviations) and back afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np

from models.errors import ModelError

if TYPE_CHECKING:
    import albumentations as A

__all__ = ["Preset", "augment", "build_augmentation"]

_SPREAD = 8.0  # normalised values in [-4, 4] map to [0, 1]


class Preset(str, Enum):
    """Built-in augmentation sets, one per domain."""

    REMOTE_SENSING = "remote-sensing"  # any orientation is plausible from above
    CT = "ct"  # anatomy has a handedness: no 90° turns, mild geometry, scanner noise
    NONE = "none"

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


def _preset(preset: Preset, ignore_index: int) -> list[Any]:
    import albumentations as A  # here, not at import: inference never augments and it takes 0.5 s

    if preset is Preset.REMOTE_SENSING:
        return [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.Affine(scale=(0.85, 1.15), rotate=(-20, 20), fill=0, fill_mask=ignore_index, p=0.3),
            A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.3),
        ]
    if preset is Preset.CT:
        return [
            A.HorizontalFlip(p=0.5),
            A.Affine(scale=(0.9, 1.1), rotate=(-10, 10), fill=0, fill_mask=ignore_index, p=0.3),
            A.RandomBrightnessContrast(brightness_limit=0.05, contrast_limit=0.05, p=0.3),
            A.GaussNoise(std_range=(0.0, 0.02), p=0.2),
        ]
    return []


def _custom(items: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Transforms from a YAML list like ``[{name: HorizontalFlip, p: 0.5}, {name: RandomRotate90}]``."""
    import albumentations as A

    out = []
    for i, item in enumerate(items):
        spec = dict(item)
        name = spec.pop("name", None)
        cls = getattr(A, str(name), None) if name else None
        if not isinstance(cls, type) or not issubclass(cls, A.BasicTransform):
            raise ModelError(
                f"augment[{i}]: {name!r} is not an albumentations transform; give one as "
                "{name: HorizontalFlip, p: 0.5}"
            )
        try:
            out.append(cls(**spec))
        except (TypeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"augment[{i}]: {name}: {first}") from e
    return out


def build_augmentation(
    preset: Preset | str = Preset.NONE,
    custom: Sequence[Mapping[str, Any]] | None = None,
    ignore_index: int = 255,
) -> A.Compose | None:
    """The transform of a preset followed by the custom ones, or None when there are none.

    Raises:
        ModelError: for an unknown preset or a custom transform albumentations does not have.
    """
    try:
        chosen = Preset(str(preset).lower())
    except ValueError:
        raise ModelError(f"augment: {preset!r} is not one of {', '.join(p.value for p in Preset)}") from None
    import albumentations as A

    transforms = _preset(chosen, ignore_index) + _custom(custom or ())
    return A.Compose(transforms) if transforms else None


def augment(
    transform: A.Compose | None, image: np.ndarray, mask: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``transform`` to one normalised tile and its mask, reproducibly.

    Args:
        transform: from :func:`build_augmentation`, or None (returns the inputs).
        image: (C, H, W) float32, normalised per band.
        mask: (H, W) uint8 labels.
        seed: fixes every random choice, so a resumed run repeats them.

    Returns:
        image (C, H, W) float32 and mask (H, W) uint8, the same shapes.
    """
    if transform is None:
        return image, mask
    transform.set_random_seed(seed)
    hwc = np.ascontiguousarray(np.moveaxis(image, 0, -1) / _SPREAD + 0.5, dtype=np.float32)
    out = transform(image=hwc, mask=mask)
    img = (np.moveaxis(out["image"], -1, 0) - 0.5) * _SPREAD
    return np.ascontiguousarray(img, np.float32), np.ascontiguousarray(out["mask"], np.uint8)
