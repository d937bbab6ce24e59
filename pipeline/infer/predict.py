"""The Ray Data UDF that runs the model: one instance per actor, model loaded once, no per-scene state.

Each batch carries its own normalisation (``mean``/``std`` per tile), so one
pool of actors serves every scene of a run, and a batch may hold tiles of
several scenes. Rows that stand for a failed read (``error`` set) are
skipped and passed through.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from models import ModelError, Precision, Predictor, build_model
from pipeline.config import ModelConfig

__all__ = ["PredictUDF"]


class PredictUDF:
    """Callable class for ``map_batches``: tiles in, class probabilities out.

    Args:
        model: a ready ``torch.nn.Module``, or None to build DeepLabV3 from
            ``model_config`` in the actor (weights are read where it runs).
        model_config: backbone, classes, weights, precision.
        bands: input channels of the model.
        device: torch device for the forward pass.
        threads: torch intra-op threads on CPU (Ray sets 1 by default).
    """

    def __init__(
        self,
        model: torch.nn.Module | None,
        model_config: ModelConfig,
        bands: int,
        device: str | None,
        threads: int,
    ) -> None:
        self.threads = threads
        torch.set_num_threads(threads)
        if model is None:
            seed = model_config.random_weights or 0  # also seeds a head replaced for another class count
            model = build_model(model_config.backbone, model_config.classes, bands, model_config.weights, seed=seed)
        self.classes = model_config.classes
        self.predictor = Predictor(
            model,
            None,
            model_config.precision,
            model_config.channels_last,
            device,
            compile=model_config.compile,
            tta=model_config.tta,
        )
        # Scores cross the object store; below fp32 the model has no more
        # precision than float16 carries, so halve the bytes.
        self.dtype = torch.float32 if self.predictor.precision is Precision.FP32 else torch.float16

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Class scores (n, K, t, t) for a batch of tiles; tiles marked ``skip`` get zeros.

        ``model_seconds`` gives each row an equal share of the time this call
        took (normalising, the forward pass, the softmax, the copy back), so a
        scene's rows add up to the time the model spent on it.
        """
        # Ray Data may call this from another thread than __init__, and
        # OpenMP's thread count is per calling thread (Ray exports
        # OMP_NUM_THREADS=1): set it where the forward pass runs.
        torch.set_num_threads(self.threads)
        started = time.perf_counter()
        images, valid, skip = batch["image"], batch["valid"], batch["skip"]
        run = ~skip
        if len(run) and run.all():  # the common case: no copy into a batch of zeros
            scores = self._scores(batch, slice(None))
        else:
            np_dtype = np.float32 if self.dtype is torch.float32 else np.float16
            scores = np.zeros((len(images), self.classes, *images.shape[2:]), np_dtype)
            if run.any():
                scores[run] = self._scores(batch, run)
        spent = time.perf_counter() - started  # the scores are on the host: a GPU has finished
        return {
            "scene": batch["scene"], "index": batch["index"], "scores": scores, "valid": valid, "skip": skip,
            "error": batch["error"], "internal": batch["internal"],
            # what "auto" became where the model runs (a cluster's GPUs may differ from the driver)
            "precision": np.full(len(images), str(self.predictor.precision), dtype=object),
            "model_seconds": np.full(len(images), spent / max(1, len(images))),
        }  # fmt: skip

    def _scores(self, batch: dict[str, np.ndarray], rows: slice | np.ndarray) -> np.ndarray:
        """The model's class scores for ``rows`` of the batch, checked against the configured class count."""
        out = self.predictor.scores(
            batch["image"][rows], batch["valid"][rows], batch["mean"][rows], batch["std"][rows], dtype=self.dtype
        )
        if out.shape[1] != self.classes:
            raise ModelError(f"the model returned {out.shape[1]} class scores; {self.classes} classes were asked for")
        return out
