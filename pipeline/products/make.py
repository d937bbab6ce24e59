"""The products a run asked for (``--vector``, ``--quicklook``), checked before it and made after it.

:func:`check_products` refuses, before any work, a product that does not
apply to a scene's mask (polygons of a DICOM SEG). :func:`make_products`
runs after a successful :func:`~pipeline.infer.infer_scene`, from its
:class:`~pipeline.infer.InferenceResult` (the published mask and
probabilities) and the run's config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.products.quicklook import quicklook
from pipeline.products.vector import polygonize
from tiling.errors import ConfigError
from tiling.formats import output_format

if TYPE_CHECKING:  # the config imports models (torch); the products need only its values
    from pipeline.config import PipelineConfig

__all__ = ["Products", "check_products", "make_products", "vector_path_for"]

#: The ``--format`` name of the one mask format that polygons are made from.
_MAP_FORMAT = "cog"


@dataclass(frozen=True)
class Products:
    """What was made beside a mask (None where not asked for)."""

    vector: Path | None = None
    features: int = 0
    quicklook: Path | None = None


def vector_path_for(mask: Path, vector: str | Path, batch: bool) -> Path:
    """Where the polygons of ``mask`` go: ``vector`` itself, or ``<vector>/<mask stem>.gpkg`` in a batch."""
    return Path(vector) / f"{mask.stem}.gpkg" if batch else Path(vector)


def check_products(cfg: PipelineConfig, masks: Sequence[Path], batch: bool) -> None:
    """Refuse products that cannot be made for these masks, before any work.

    Args:
        cfg: the validated config.
        masks: the mask path of every scene of the run.
        batch: several sources (``--vector`` is then a folder).

    Raises:
        ConfigError: ``--vector`` for a mask that is not a COG, or where its output cannot go.
    """
    vector = cfg.products.vector
    if vector is None:
        return
    for mask in masks:
        fmt = output_format(mask, cfg.output_format)
        if fmt.writes != _MAP_FORMAT:
            raise ConfigError(
                f"{mask}: --vector makes polygons of a map mask (a COG, .tif), not of a {fmt.writes} mask; "
                "drop --vector or write .tif"
            )
    where = Path(vector)
    if batch and not where.is_dir():
        raise ConfigError(f"{where}: with several sources, --vector must be an existing folder")
    if not batch and not where.parent.is_dir():
        raise ConfigError(f"{where}: cannot write the polygons, folder {where.parent} does not exist")
    if not batch and where.is_dir():
        raise ConfigError(f"{where}: --vector names a folder; give a .gpkg file")


def make_products(
    source: str | Path, mask: Path, probs: Path | None, cfg: PipelineConfig, batch: bool = False, progress: bool = False
) -> Products:
    """Make the products ``cfg.products`` asks for from a finished mask.

    Args:
        source: the image the mask was made from.
        mask: the published mask (``InferenceResult.mask``).
        probs: the published probabilities file, if any (``InferenceResult.probs``).
        cfg: the run's config.
        batch: several sources, so ``--vector`` is a folder.
        progress: show progress bars.
    """
    p = cfg.products
    vector, features, look = None, 0, None
    if p.vector is not None:
        result = polygonize(
            mask, vector_path_for(mask, p.vector, batch), probs=probs, class_names=cfg.model.names,
            classes=p.vector_classes, simplify=p.simplify, progress=progress,
        )  # fmt: skip
        vector, features = result.path, result.features
    if p.quicklook:
        look = quicklook(
            source, mask, class_names=cfg.model.names, bands=cfg.input.bands, window=cfg.input.window,
            series=cfg.input.series, level=cfg.input.level,
        )  # fmt: skip
    return Products(vector, features, look)
