"""Streaming Cloud-Optimised GeoTIFF sink for label masks (and optional probabilities).

Blocks are written as they finish into a tiled, compressed GTiff under a
temporary name beside the output. :meth:`CogSink.finalize` converts it with
GDAL's COG driver (which adds overviews) and renames the result into place,
so the final name appears only when the file is complete. A QGIS style
(``.qml``) and a STAC Item (``.json``) that describe the mask are published
in the same step (see :mod:`tiling.formats.geotiff.sidecars`). Writing directly
with ``driver="COG"`` would buffer the whole raster in memory; the windowed
GTiff plus ``rasterio.shutil.copy`` stays flat (see docs/design.md).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
import rasterio.windows
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.enums import ColorInterp
from rasterio.errors import RasterioError

from tiling.core.labels import LABEL_NODATA, RGB, class_color, colormap
from tiling.core.qa import Disagreement, TilePlan
from tiling.core.windows import Window
from tiling.errors import ConfigError
from tiling.formats.base import ModelProvenance, Sink, SinkRequest, Source, check_writable, sink_error, temp_name
from tiling.formats.geotiff import gdal  # noqa: F401  (caps GDAL's block cache before any I/O)
from tiling.formats.geotiff.qa import DISAGREEMENT_TAG, PLAN_TAG, QaFiles, qa_paths
from tiling.formats.geotiff.sidecars import MaskDescription, Sidecars, optional, remove_previous, source_datetime
from tiling.formats.reference import MapReference
from tiling.version import mark

__all__ = ["DEFAULT_BLOCK", "CogSink", "probs_path_for"]

log = logging.getLogger(__name__)

#: Internal tile size of the COG, and the stitcher's output block.
DEFAULT_BLOCK = 256


def probs_path_for(path: Path) -> Path:
    """Where ``--save-probs`` writes the probabilities next to mask ``path``."""
    return path.with_name(f"{path.stem}.probs{path.suffix or '.tif'}")


class _TiffPart:
    """One tiled GTiff under a temporary name that becomes a COG on commit."""

    def __init__(self, final: Path, profile: dict[str, Any], resampling: str) -> None:
        self.final = final
        self.resampling = resampling
        self.tmp = temp_name(final, ".part.tif")
        self.tmp_cog = self.tmp.with_name(self.tmp.name.replace(".part.tif", ".cog.part.tif"))
        try:
            self.ds = rasterio.open(self.tmp, "w", **profile)
        except (RasterioError, CPLE_BaseError, OSError) as e:
            raise sink_error(final, e, "creating") from e

    def convert(self, block: int) -> None:
        """Close the GTiff and convert it to a COG, still under a temporary name."""
        try:
            self.ds.close()  # writes the TIFF directory: the disk may fill here too
            rasterio.shutil.copy(
                self.tmp, self.tmp_cog, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=block,
                OVERVIEWS="AUTO", OVERVIEW_RESAMPLING=self.resampling, BIGTIFF="IF_SAFER",
                NUM_THREADS="ALL_CPUS",  # compress blocks and overviews on every core
            )  # fmt: skip
        except (RasterioError, CPLE_BaseError, OSError) as e:
            raise sink_error(self.final, e, "finishing") from e
        finally:
            self.tmp.unlink(missing_ok=True)

    def publish(self) -> None:
        """Move the finished COG to its final name (atomic on one file system)."""
        os.replace(self.tmp_cog, self.final)

    def remove(self) -> None:
        """Close and delete the temporary files (closing may fail on a full disk; they go anyway)."""
        if not self.ds.closed:
            try:
                self.ds.close()
            except (RasterioError, CPLE_BaseError, OSError) as e:
                log.debug("closing %s failed while aborting: %s", self.tmp, e)
        for p in (self.tmp, self.tmp_cog):
            p.unlink(missing_ok=True)


class CogSink(Sink):
    """Write a uint8 label mask (and optionally uint8 probabilities x255) as COGs.

    The mask copies the source's CRS, transform, width and height; nodata
    pixels get label 255, declared as the file's nodata. Class names go into
    the band description and tags, colours into the colour table; a QGIS
    style and a STAC Item go beside it. The probabilities are plain bands
    (photometric MINISBLACK, no alpha: four classes must not read as RGBA),
    each described by its class name.

    The style, the STAC Item and the QA files are optional products: one
    that cannot be made is a warning naming it and the reason, and the mask
    is published without it (see :func:`~tiling.formats.geotiff.sidecars.optional`).

    Args:
        path: the output mask.
        shape: (rows, cols) of the scene.
        georef: CRS and transform of the source.
        class_names: one name per class.
        save_probs: also write ``<stem>.probs.tif`` with one band per class.
        block: internal tile size of the outputs.
        provenance: the model that made the mask, for the STAC Item.
        source: the image the mask was made from, for the STAC Item.
        plan: the tile plan, recorded in the mask's tags (``TILEWISE_PLAN``).
        qa: also publish ``<stem>.qa.tif``, ``<stem>.qa.json`` and ``<stem>.qa.qml`` (needs ``plan``;
            see :mod:`tiling.formats.geotiff.qa`).
        class_colors: one RGB colour per class (colour table, styles, STAC); the default palette when None.

    Raises:
        SinkError: if the output folder is missing or not writable.
    """

    supports_qa = True

    def __init__(
        self,
        path: str | Path,
        shape: tuple[int, int],
        georef: MapReference,
        class_names: Sequence[str],
        save_probs: bool = False,
        block: int = DEFAULT_BLOCK,
        provenance: ModelProvenance | None = None,
        source: Path | None = None,
        plan: TilePlan | None = None,
        qa: bool = False,
        class_colors: Sequence[RGB] | None = None,
    ) -> None:
        self.path = Path(path)
        self.plan = plan
        self._disagreement: Disagreement | None = None
        self.shape = tuple(shape)
        check_writable(self.path)
        self.block = (block, block)
        self.class_names = list(class_names)
        self.class_colors = tuple(class_colors or (class_color(k) for k in range(len(self.class_names))))
        self.probs = probs_path_for(self.path) if save_probs else None
        description = MaskDescription(
            tuple(self.class_names), (int(shape[0]), int(shape[1])), georef.crs, georef.transform, provenance,
            source, source_datetime(source) if source is not None else None, self.class_colors,
        )  # fmt: skip
        self._sidecars = Sidecars(self.path, description, self.probs)
        self._qa = QaFiles(self.path, plan, self.shape, georef.crs, georef.transform) if qa and plan else None  # type: ignore[arg-type]
        base = dict(
            driver="GTiff", height=shape[0], width=shape[1], tiled=True,
            blockxsize=block, blockysize=block, BIGTIFF="IF_SAFER",
            # the temporary GTiff is recompressed into the COG, so it takes the fastest codec that
            # keeps it small: ZSTD level 1 writes an 8192^2 mask in 0.07 s against deflate's 0.26 s,
            # in a smaller file, and the COG made from it is byte for byte the same
            compress="zstd", zstd_level=1,
            crs=georef.crs, transform=Affine(*georef.transform) if georef.transform else None,
        )  # fmt: skip
        self._parts: list[_TiffPart] = []
        try:
            self._mask = self._add(self.path, dict(base, count=1, dtype="uint8", nodata=LABEL_NODATA), "NEAREST")
            self._probs = None
            if save_probs:
                # plain bands: GDAL would take 3 or 4 uint8 bands for RGB(A), and the 4th class for transparency
                profile = dict(base, count=len(self.class_names), dtype="uint8", nodata=None, photometric="MINISBLACK")
                self._probs = self._add(probs_path_for(self.path), profile, "AVERAGE")
            self._describe()
        except Exception:
            self.abort()
            raise
        self._closed = False

    @classmethod
    def planned_outputs(cls, path: Path, request: SinkRequest) -> tuple[Path, ...]:
        """The mask, ``<stem>.probs.tif`` when probabilities are saved, the QGIS style, the STAC Item,
        and with ``qa`` the seam QA raster, report and style.
        """
        probs = (probs_path_for(path),) if request.save_probs else ()
        qa = qa_paths(path) if request.qa else ()
        return (path, *probs, path.with_suffix(".qml"), path.with_suffix(".json"), *qa)

    @classmethod
    def for_source(cls, path: Path, source: Source, request: SinkRequest) -> CogSink:
        """A COG on ``source``'s map grid.

        Raises:
            ConfigError: if the source is not a 2-D map raster (write .zarr or .dcm instead),
                or has no CRS and ``request.allow_unreferenced`` is off.
        """
        ref = source.reference
        if len(source.shape) != 2 or not isinstance(ref, MapReference):
            raise ConfigError(f"{path}: a GeoTIFF mask needs a 2-D georeferenced source; write .zarr or .dcm instead")
        if ref.crs is None and not request.allow_unreferenced:
            raise ConfigError(
                f"{source.path}: has no CRS, so the mask could not be placed on a map; "
                "pass --allow-no-crs to write a mask on the bare pixel grid"
            )
        return cls(
            path, (int(source.shape[0]), int(source.shape[1])), ref, request.class_names, request.save_probs,
            provenance=request.provenance, source=Path(source.path),
            plan=replace(request.plan, block=tuple(int(b) for b in source.block_shape)) if request.plan else None,
            qa=request.qa, class_colors=request.class_colors,
        )  # fmt: skip

    def _add(self, final: Path, profile: dict[str, Any], resampling: str) -> _TiffPart:
        part = _TiffPart(final, profile, resampling)
        self._parts.append(part)
        return part

    def write(self, window: Window, labels: np.ndarray, probs: np.ndarray | None) -> None:
        """Write one finished block: labels (rows, cols), probs (K, rows, cols) in [0, 1]."""
        self._check_block(window, labels)
        rw = rasterio.windows.Window(window.start[1], window.start[0], window.shape[1], window.shape[0])
        try:
            self._mask.ds.write(labels[np.newaxis], window=rw)
            if self._probs is not None and probs is not None:
                self._probs.ds.write(np.rint(probs * 255).astype(np.uint8), window=rw)
        except (RasterioError, CPLE_BaseError, OSError) as e:
            raise sink_error(self.path, e) from e

    def _describe(self) -> None:
        names = json.dumps(self.class_names)
        ds = self._mask.ds
        ds.write_colormap(1, colormap(self.class_colors))
        ds.set_band_description(1, "class")
        ds.update_tags(CLASS_NAMES=names, NODATA_MEANING="no valid source pixel", TILEWISE=mark())
        ds.update_tags(1, **{f"CLASS_{k}": n for k, n in enumerate(self.class_names)})
        if self.plan is not None:
            ds.update_tags(**{PLAN_TAG: json.dumps(self.plan.to_dict())})
        if self._probs is not None:
            probs = self._probs.ds
            probs.colorinterp = [ColorInterp.gray] + [ColorInterp.undefined] * (len(self.class_names) - 1)
            for k, n in enumerate(self.class_names):
                probs.set_band_description(k + 1, n)
            probs.update_tags(CLASS_NAMES=names, SCALE="probability = value / 255", TILEWISE=mark())

    def record_qa(self, disagreement: Disagreement) -> None:
        """Store the measured disagreement in the mask's tags and the QA report."""
        self._disagreement = disagreement
        if not self._closed:
            self._mask.ds.update_tags(**{DISAGREEMENT_TAG: json.dumps(disagreement.to_dict())})

    def finalize(self) -> tuple[Path, ...]:
        """Convert to COG and move into place with its sidecars.

        The style, the STAC Item and the QA files are optional: one that
        cannot be made is left out with a warning line, never at the mask's cost.

        Returns:
            The mask, the probabilities (if saved), the ``.qml``, the STAC ``.json``,
            and with ``qa`` the ``.qa.tif``, ``.qa.json`` and ``.qa.qml`` (those that were made).

        Raises:
            SinkFinalizedError: if called twice.
            SinkError: if the conversion or rename of the mask or the probabilities fails
                (nothing is left behind).
        """
        self._begin_finalize()
        try:
            for part in self._parts:
                part.convert(self.block[0])
            qa = self._write_qa()
            extra = dict(zip(("qa", "qa_report", "qa_style"), qa.finals)) if qa is not None else {}
            self._sidecars.write(self._mask.tmp_cog, extra)
            for part in self._parts:
                part.publish()
        except Exception:
            self.abort()
            raise
        log.info("wrote %s", self.path)
        return tuple(part.final for part in self._parts) + self._publish_products(qa)

    def _write_qa(self) -> QaFiles | None:
        """Write the QA files under temporary names; None if not asked for or they failed (with a warning)."""
        qa = self._qa
        if qa is None:
            return None
        if optional("seam QA files", qa.raster, lambda: qa.write(self._disagreement, mark())):
            return qa
        qa.remove()
        for final in qa.finals:
            remove_previous(final)
        return None

    def _publish_products(self, qa: QaFiles | None) -> tuple[Path, ...]:
        """Move the sidecars and QA files into place after the mask; a rename that fails is a warning."""
        published = self._sidecars.publish()
        if qa is not None and optional("seam QA files", qa.raster, qa.publish):
            published += qa.finals
        elif qa is not None:
            qa.remove()
        return published

    def abort(self) -> None:
        """Remove every temporary file; the final names are never touched."""
        self._closed = True
        for part in getattr(self, "_parts", []):
            part.remove()
        if hasattr(self, "_sidecars"):
            self._sidecars.remove()
        qa = getattr(self, "_qa", None)
        if qa is not None:
            qa.remove()
