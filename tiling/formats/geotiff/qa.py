"""Seam QA files beside a COG mask: the coverage raster and a small JSON report.

- ``<mask stem>.qa.tif``: two float32 bands on the mask's grid decimated by an
  integer step (:func:`tiling.core.qa.qa_step`: the longest side stays within
  4096 px), georeferenced like the mask: band 1 ``tiles``, the number of tile
  windows covering each pixel, band 2 ``weight``, the sum of their blend
  weights (each the mean over the step x step cell). Written block by block.
- ``<mask stem>.qa.json``: the tile plan, the step, coverage figures (how much
  of the scene lies under 1, 2, 3, 4+ tiles) and the disagreement between
  overlapping tiles when the run measured it (``tilewise infer --qa``).
- ``<mask stem>.qa.qml``: the raster's QGIS style (QGIS loads it with the
  raster): band 1 in five colours, red where no tile covers a pixel, then
  1, 2, 3 and 4 or more tiles.

All three are written under temporary names (:meth:`QaFiles.write`) and moved
into place by :meth:`QaFiles.publish`: by the COG sink's ``finalize``, or
by ``tilewise qa`` for a finished mask. The mask records what they need in
its tags: ``TILEWISE_PLAN`` (the :class:`~tiling.core.qa.TilePlan`) and,
after a run with ``--qa``, ``TILEWISE_DISAGREEMENT``.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.windows
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError

from tiling.core.qa import Disagreement, TilePlan, coverage_blocks, qa_step
from tiling.errors import ConfigError
from tiling.formats.base import StagedFiles, sink_error

__all__ = ["DISAGREEMENT_TAG", "PLAN_TAG", "QaFiles", "qa_paths", "qa_qml_document", "read_qa_tags"]

#: Mask tags holding the tile plan and the measured disagreement (JSON).
PLAN_TAG = "TILEWISE_PLAN"
DISAGREEMENT_TAG = "TILEWISE_DISAGREEMENT"


#: Colours of pixels under 0, 1, 2, 3 and 4+ tiles in the QA raster's style: uncovered is an error (red).
QA_COLORS = ("#d7191c", "#fdae61", "#a6d96a", "#1a9641", "#0b5d1e")


def qa_paths(mask: Path) -> tuple[Path, Path, Path]:
    """``(<stem>.qa.tif, <stem>.qa.json, <stem>.qa.qml)`` beside ``mask``."""
    return tuple(mask.with_name(f"{mask.stem}.qa.{ext}") for ext in ("tif", "json", "qml"))  # type: ignore[return-value]


def qa_qml_document() -> str:
    """The QA raster's QGIS style: band 1 (tiles per pixel) in discrete colours for 0, 1, 2, 3, 4+ tiles."""
    root = ET.Element("qgis", version="3.22.0", styleCategories="AllStyleCategories")
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(pipe, "rasterrenderer", type="singlebandpseudocolor", band="1", opacity="1",
                             alphaBand="-1", classificationMin="0", classificationMax="4")  # fmt: skip
    ET.SubElement(renderer, "rasterTransparency")
    shader = ET.SubElement(ET.SubElement(renderer, "rastershader"), "colorrampshader", colorRampType="DISCRETE",
                           classificationMode="1", clip="0", minimumValue="0", maximumValue="4")  # fmt: skip
    labels = ("no tile", "1 tile", "2 tiles", "3 tiles", "4+ tiles")
    # DISCRETE: a pixel takes the first entry whose value is >= its own
    for bound, color, label in zip(("0.5", "1.5", "2.5", "3.5", "inf"), QA_COLORS, labels):
        ET.SubElement(shader, "item", value=bound, color=color, alpha="255", label=label)
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        "<!-- style of a seam QA raster written by tilewise -->\n" + ET.tostring(root, encoding="unicode") + "\n"
    )


def read_qa_tags(mask: Path) -> tuple[TilePlan, Disagreement | None, dict[str, Any]]:
    """The tile plan and stored disagreement of a finished COG mask, and its grid.

    Returns:
        ``(plan, disagreement or None, grid)`` where grid holds ``shape``, ``crs`` and ``transform``.

    Raises:
        ConfigError: if ``mask`` is not a mask tilewise wrote with its tile plan recorded.
    """
    try:
        with rasterio.open(mask) as ds:
            tags = ds.tags()
            grid = {"shape": (ds.height, ds.width), "crs": ds.crs, "transform": ds.transform}
    except (RasterioError, OSError) as e:
        raise ConfigError(f"{mask}: cannot be read as a GeoTIFF mask ({' '.join(str(e).split())})") from None
    if PLAN_TAG not in tags:
        raise ConfigError(
            f"{mask}: records no tile plan (not a COG mask of this tilewise version); "
            "segment the scene again with tilewise infer --qa"
        )
    try:
        plan = TilePlan.from_dict(json.loads(tags[PLAN_TAG]))
        d = json.loads(tags[DISAGREEMENT_TAG]) if DISAGREEMENT_TAG in tags else None
        disagreement = Disagreement(int(d["overlap_pixels"]), int(d["pixels"])) if d else None
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{mask}: its {PLAN_TAG}/{DISAGREEMENT_TAG} tags are damaged ({e})") from None
    return plan, disagreement, grid


class QaFiles(StagedFiles):
    """The ``.qa.tif``, ``.qa.json`` and ``.qa.qml`` of one mask, written to temporary names, then published.

    Args:
        mask: the mask's final path.
        plan: the tile plan that made it.
        shape: (rows, cols) of the mask.
        crs: its CRS (anything rasterio takes), or None.
        transform: its affine transform, or None.
    """

    def __init__(self, mask: Path, plan: TilePlan, shape: tuple[int, int], crs: Any, transform: Any) -> None:
        self.mask = mask
        self.plan = plan
        self.shape = (int(shape[0]), int(shape[1]))
        self.crs = crs
        self.transform = (
            Affine(*transform) if transform is not None and not isinstance(transform, Affine) else transform
        )
        self.raster, self.report, self.style = qa_paths(mask)
        super().__init__(self.raster, self.report, self.style)
        self.summary: dict[str, Any] = {}

    @property
    def finals(self) -> tuple[Path, Path, Path]:
        """The final paths: the raster, the report, the style."""
        return self.raster, self.report, self.style

    def write(self, disagreement: Disagreement | None, software: str = "tilewise") -> dict[str, Any]:
        """Compute the coverage raster block by block and write the three files under temporary names.

        Returns:
            The report written to the JSON.

        Raises:
            SinkError: if a file cannot be written.
        """
        grid = self.plan.grid(self.shape)
        step = qa_step(self.shape)
        out_shape = (-(-self.shape[0] // step), -(-self.shape[1] // step))
        profile = dict(
            driver="GTiff", height=out_shape[0], width=out_shape[1], count=2, dtype="float32",
            tiled=True, blockxsize=256, blockysize=256, compress="deflate", BIGTIFF="IF_SAFER", crs=self.crs,
            transform=self.transform @ Affine.scale(step) if self.transform is not None else None,
        )  # fmt: skip
        under = np.zeros(5, np.int64)  # output pixels under 0, 1, 2, 3, 4+ tiles (cell means rounded)
        top = 0.0
        try:
            with rasterio.open(self.temp(self.raster), "w", **profile) as ds:
                ds.set_band_description(1, "tiles")
                ds.set_band_description(2, "weight")
                ds.update_tags(TILEWISE=software, SOURCE_MASK=self.mask.name, STEP=str(step), **{PLAN_TAG: json.dumps(self.plan.to_dict())})  # fmt: skip
                for window, count, weight in coverage_blocks(grid, self.plan.blend, step):
                    rw = rasterio.windows.Window(window.start[1], window.start[0], window.shape[1], window.shape[0])
                    ds.write(np.stack([count, weight]), window=rw)
                    under += np.bincount(np.minimum(np.rint(count).astype(np.int64), 4).ravel(), minlength=5)[:5]
                    top = max(top, float(count.max()))
        except (RasterioError, CPLE_BaseError, OSError) as e:
            raise sink_error(self.raster, e) from e
        total = max(1, int(under.sum()))
        report: dict[str, Any] = {
            "tilewise": software,
            "mask": self.mask.name,
            "shape": list(self.shape),
            "plan": self.plan.to_dict(),
            "stride": list(grid.stride),
            "tiles": len(grid),
            "coverage": {
                "raster": self.raster.name,
                "step": step,
                "bands": ["tiles", "weight"],
                "max_tiles": top,
                "share_under_tiles": {
                    k: round(int(under[i]) / total, 6) for i, k in enumerate(("0", "1", "2", "3", "4+"))
                },
            },
            "disagreement": disagreement.to_dict() if disagreement is not None else None,
            "disagreement_definition": (
                "share of pixels predicted by two or more tiles whose argmax classes are not all equal "
                "(tiles' own predictions, before blending)"
            ),
        }
        try:
            self.temp(self.report).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
            self.temp(self.style).write_text(qa_qml_document(), encoding="utf-8")
        except OSError as e:
            raise sink_error(self.report, e) from e
        self.summary = report
        return report
