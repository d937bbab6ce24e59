"""The products a run asked for (``--vector``, ``--quicklook``), checked before it and made after it.

:func:`check_products` refuses, before any work, a product that does not
apply to a scene's mask (polygons of a DICOM SEG); the run's planning
checks their paths with the mask's (:func:`~pipeline.products.files.planned_products`).
:func:`make_products` runs after a successful
:func:`~pipeline.infer.infer_scene`, from its
:class:`~pipeline.infer.InferenceResult`: the published mask and
probabilities, and the class names and colours the mask was written with
(an export's names where ``--weights`` carried them), so every product
names and colours the classes as the mask does.

Products are optional: one that cannot be made is a warning line naming it
and the reason (:attr:`Products.warnings`), never the mask's loss. Each one
made is then listed in the mask's STAC Item, where there is one
(:func:`tiling.formats.geotiff.sidecars.add_assets`, an atomic rewrite).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.products.files import quicklook_path_for, vector_path_for
from pipeline.products.quicklook import quicklook
from pipeline.products.vector import polygonize
from tiling.errors import ConfigError
from tiling.formats import output_format
from tiling.formats.geotiff.sidecars import add_assets

if TYPE_CHECKING:  # the config imports models (torch); the products need only its values
    from pipeline.config import PipelineConfig
    from pipeline.infer import InferenceResult

__all__ = ["Products", "check_products", "make_products", "vector_path_for"]

#: The ``--format`` name of the one mask format that polygons are made from.
_MAP_FORMAT = "cog"


@dataclass(frozen=True)
class Products:
    """What was made beside a mask (None where not asked for, or where it failed).

    Attributes:
        vector: the GeoPackage of polygons.
        features: polygons written.
        quicklook: the PNG.
        warnings: one line per product that could not be made (its path, what, why).
    """

    vector: Path | None = None
    features: int = 0
    quicklook: Path | None = None
    warnings: tuple[str, ...] = ()


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


def _attempt(what: str, path: Path, make: Callable[[], Any], warnings: list[str]) -> Any:
    """``make()``, or None with one warning line in ``warnings`` if it fails: no product may cost the mask."""
    try:
        return make()
    except Exception as e:  # any failure: the mask is already published, and stays
        reason = " ".join(str(e).split()) or type(e).__name__
        warnings.append(f"{path}: {what} not written ({type(e).__name__}: {reason}); the mask is published without it")
        return None


def make_products(
    source: str | Path, result: InferenceResult, cfg: PipelineConfig, batch: bool = False, progress: bool = False
) -> Products:
    """Make the products ``cfg.products`` asks for from a finished mask, and list them in its STAC Item.

    Args:
        source: the image the mask was made from.
        result: the scene's result: its mask, probabilities, class names and colours.
        cfg: the run's config (which products, where, how).
        batch: several sources, so ``--vector`` is a folder.
        progress: show progress bars.

    Returns:
        What was made; a product that failed is a line in ``warnings`` instead.
    """
    p = cfg.products
    mask, names, colors = result.mask, list(result.class_names) or None, result.class_colors or None
    warnings: list[str] = []
    made: dict[str, Path] = {}
    vector, features, look = None, 0, None
    if p.vector is not None:
        out = vector_path_for(mask, p.vector, batch)
        polygons = _attempt("polygons", out, lambda: polygonize(
            mask, out, probs=result.probs, class_names=names, classes=p.vector_classes, simplify=p.simplify,
            progress=progress, class_colors=colors, overwrite=cfg.overwrite,
        ), warnings)  # fmt: skip
        if polygons is not None:
            vector, features = polygons.path, polygons.features
            made["polygons"] = vector
    if p.quicklook:
        look = _attempt("quicklook", quicklook_path_for(mask), lambda: quicklook(
            source, mask, class_names=names, bands=cfg.input.bands, window=cfg.input.window,
            series=cfg.input.series, level=cfg.input.level, class_colors=colors, overwrite=cfg.overwrite,
        ), warnings)  # fmt: skip
        if look is not None:
            made["quicklook"] = look
    item = mask.with_suffix(".json")
    if made and item in result.published:
        _attempt(f"STAC Item listing of {', '.join(made)}", item, lambda: add_assets(item, made), warnings)
    return Products(vector, features, look, tuple(warnings))
