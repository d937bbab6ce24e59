"""Turn a batch of image tiles into per-pixel class probabilities.

The predictor owns the model's device and precision: it normalises each band,
zeroes invalid pixels, runs the model under ``inference_mode`` with optional
autocast and channels_last, and returns softmax probabilities as float32
numpy arrays. It accepts any ``torch.nn.Module`` that maps (B, C, H, W) to
(B, K, H, W) scores (or a dict with ``"out"``, as torchvision's segmentation
models return), so a benchmark can swap in a cheap model.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from models.deeplab import first_conv
from models.errors import BandCountError, ModelError
from models.precision import resolve_precision
from models.spec import TTA, Normalization, Precision

__all__ = ["TTA", "TTA_FLIPS", "Normalization", "Precision", "Predictor", "check_bands", "resolve_device"]


#: The flips of ``TTA.FLIPS`` as the tensor dims they reverse on (B, C, H, W): identity,
#: horizontal (cols), vertical (rows), both. Each is its own inverse.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (3,), (2,), (2, 3))


def check_bands(model: nn.Module, bands: int) -> None:
    """Raise :class:`BandCountError` unless ``model``'s first convolution takes ``bands`` inputs.

    Models without a convolution are not checked.
    """
    conv = first_conv(model)
    if conv is not None and conv.in_channels != bands:
        raise BandCountError(
            f"the image has {bands} band(s) but the model takes {conv.in_channels}; choose bands with --bands"
        )


def resolve_device(device: str | None = None) -> torch.device:
    """``cuda`` where available unless told otherwise."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Predictor:
    """Batched, normalised, mixed-precision inference with a segmentation model.

    Args:
        model: any module mapping (B, C, H, W) float to (B, K, H, W) scores.
        normalization: per-band mean/std applied before the model, or None.
        precision: ``auto`` (what the device does natively), ``fp32``, ``bf16`` or ``fp16`` autocast.
        channels_last: use the channels_last memory format.
        device: torch device; CUDA when available by default.
        compile: run the model through ``torch.compile`` (the first batches
            pay the compilation; worth it for long runs on a GPU).
        tta: ``none``, or ``flips``: the softmax probabilities are the mean over
            the identity, horizontal, vertical and both flips of each tile, each
            flipped back before averaging (the flip set of ttach's
            ``flip_transform``; nnU-Net mirrors the same axes). Costs one
            forward pass per flip.
    """

    def __init__(
        self,
        model: nn.Module,
        normalization: Normalization | None = None,
        precision: Precision | str = Precision.FP32,
        channels_last: bool = True,
        device: str | torch.device | None = None,
        compile: bool = False,
        tta: TTA | str = TTA.NONE,
    ) -> None:
        try:
            self.tta = TTA(str(tta).lower())
        except ValueError:
            raise ModelError(f"tta: must be one of {', '.join(t.value for t in TTA)}, got {tta!r}") from None
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        if self.precision is Precision.FP16 and self.device.type != "cuda":
            raise ModelError("fp16 autocast needs a CUDA device; use bf16 or fp32 on the CPU")
        self.channels_last = channels_last
        self.model = model.eval().to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._forward: nn.Module = torch.compile(self.model) if compile else self.model  # type: ignore[assignment]
        # On a GPU, page-locked host buffers let the copy run asynchronously with the previous batch.
        self._pin = self.device.type == "cuda"
        self.normalization = normalization
        if normalization is not None:
            mean = torch.tensor(normalization.mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
            std = torch.tensor(normalization.std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
            self._scale = 1.0 / std
            self._shift = -mean * self._scale

    def check_bands(self, bands: int) -> None:
        """Raise :class:`BandCountError` unless the model takes ``bands`` input bands."""
        check_bands(self.model, bands)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision is Precision.FP32:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision is Precision.BF16 else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def prepare(
        self,
        images: np.ndarray,
        valid: np.ndarray | None = None,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
    ) -> torch.Tensor:
        """Normalise (B, C, H, W) images into a float32 tensor on the device, zeroing invalid pixels.

        The raw pixels travel to the device in their own dtype (a uint8 batch
        is a quarter of its float32 size), are converted to float32 and
        normalised in place, and then take the model's memory format.
        ``images`` itself is never modified.

        Args:
            images: (B, C, H, W) in any numeric dtype.
            valid: (B, H, W) bool, or None for all valid.
            mean: per-sample means (B, C), overriding the predictor's normalisation.
            std: per-sample standard deviations (B, C), with ``mean``.
        """
        if images.ndim != 4:
            raise ModelError(f"expected a (batch, bands, rows, cols) array, got shape {images.shape}")
        self.check_bands(images.shape[1])
        host = torch.from_numpy(np.ascontiguousarray(images))
        x = (host.pin_memory() if self._pin else host).to(self.device, non_blocking=True)
        # Convert, normalise and mask in the images' own (contiguous) layout, then change the
        # layout once: on a CPU that is 2.3x faster than converting into channels_last and
        # normalising there, where each broadcast walks the bands with a stride.
        x = x.to(torch.float32)
        if x.data_ptr() == host.data_ptr():  # float32 pixels on the CPU: x is the caller's array
            x = x.clone()  # normalising in place must not change it (a Ray block, a retried batch)
        shift, scale = self._affine(images.shape[:2], mean, std)
        if shift is not None and scale is not None:
            x.mul_(scale).add_(shift)  # (x - mean) / std
        if valid is not None and not np.all(valid):  # most tiles are wholly valid: skip the pass
            keep = torch.from_numpy(np.ascontiguousarray(valid)).to(self.device, non_blocking=True)
            x.masked_fill_(~keep.unsqueeze(1), 0.0)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _affine(
        self, batch_bands: tuple[int, ...], mean: np.ndarray | None, std: np.ndarray | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The (B or 1, C, 1, 1) shift and scale with ``(x - mean) / std == shift + x * scale``."""
        if mean is not None and std is not None:
            m = torch.as_tensor(np.asarray(mean, np.float32).reshape(batch_bands), device=self.device)
            scale = 1.0 / torch.as_tensor(np.asarray(std, np.float32).reshape(batch_bands), device=self.device)
            return (-m * scale)[..., None, None], scale[..., None, None]
        if self.normalization is None:
            return None, None
        return self._shift, self._scale

    @torch.inference_mode()
    def scores(
        self,
        images: np.ndarray,
        valid: np.ndarray | None = None,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> np.ndarray:
        """Class probabilities (B, K, H, W) for images (B, C, H, W), as a contiguous ``dtype`` array.

        ``mean``/``std`` (B, C) normalise each sample with its own scene's
        statistics (see :meth:`prepare`).
        """
        x = self.prepare(images, valid, mean, std)
        flips = TTA_FLIPS if self.tta is TTA.FLIPS else ((),)
        total: torch.Tensor | None = None
        for dims in flips:
            probs = self._probs(torch.flip(x, dims) if dims else x)
            probs = torch.flip(probs, dims) if dims else probs  # back onto the tile's own pixels
            total = probs if total is None else total.add_(probs)
        assert total is not None
        if len(flips) > 1:
            total.div_(len(flips))
        return total.to(dtype).contiguous().cpu().numpy()

    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities (B, K, H, W) float32 of one forward pass."""
        with self._autocast():
            out = self._forward(x)
        if isinstance(out, dict):
            out = out["out"]
        return torch.softmax(out.float(), dim=1)

    def __call__(self, images: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Class probabilities (B, K, H, W) float32 for images (B, C, H, W)."""
        return self.scores(images, valid)
