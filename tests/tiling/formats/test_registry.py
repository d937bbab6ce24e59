"""The format registry: sniffing, options refused generically, output formats, missing extras."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import SHARED
from tiling import formats
from tiling.errors import ConfigError, SourceOpenError
from tiling.formats.base import Format


@pytest.mark.parametrize(
    ("path", "name"),
    [
        (SHARED / "geotiff/rasterio/RGB.byte.tif", "geotiff"),
        (SHARED / "zarr/rgb_byte_landsat.ome.zarr", "zarr"),
        (SHARED / "zarr/zarr_implementations_astronaut.zr", "zarr"),  # no .zarr suffix: found by its .zgroup
        (SHARED / "dicom/series/pydicom_98892001_CT5N", "dicom"),
        (SHARED / "dicom/pydicom/CT_small.dcm", "dicom"),
    ],
)
def test_sniff(path: Path, name: str) -> None:
    assert formats.sniff(path).name == name


def test_an_option_for_another_format_names_the_formats_that_take_it() -> None:
    with pytest.raises(ConfigError, match=r"level \(--level\) does not apply to a GeoTIFF source; it applies to Zarr"):
        formats.source_options("geotiff", {"level": 1})
    with pytest.raises(ConfigError, match="series.*applies to DICOM"):
        formats.source_options("zarr", {"series": "1.2.3"})
    assert formats.source_options("geotiff", {"bands": [3, 1], "level": None}).bands == (3, 1)


@pytest.mark.parametrize(
    ("out", "requested", "name"),
    [("m.tif", None, "geotiff"), ("m.TIFF", None, "geotiff"), ("m.zarr", None, "zarr"), ("m.dcm", None, "dicom"),
     ("m", "cog", "geotiff"), ("m", "ome-zarr", "zarr"), ("m", "dicom-seg", "dicom"), ("m.tif", "zarr", "zarr")],
)  # fmt: skip
def test_output_format_from_suffix_or_name(out: str, requested: str | None, name: str) -> None:
    assert formats.output_format(out, requested).name == name


def test_unknown_output_format_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="cannot tell the output format from '.png'") as e:
        formats.output_format("m.png")
    assert all(s in str(e.value) for s in (".tif (cog)", ".zarr (ome-zarr)", ".dcm (dicom-seg)", "--format"))
    with pytest.raises(ConfigError, match="'png' is not one of"):
        formats.output_format("m.tif", "png")


def test_natural_output_of_each_source_format() -> None:
    assert [formats.natural_output(n).suffixes[0] for n in ("geotiff", "dicom", "zarr")] == [".tif", ".dcm", ".zarr"]


@dataclass(frozen=True)
class _Opts:
    pass


def _needs_missing_library(path: Path, options: _Opts):
    import tilewise_no_such_library  # noqa: F401

    raise AssertionError("unreachable")


MISSING = Format(
    name="needs-extra", title="Exotic", sniff=lambda p: p.suffix == ".exotic",
    open_source=_needs_missing_library, options=_Opts, extra="exotic",
)  # fmt: skip


def test_a_missing_extra_is_one_line_naming_the_pip_command(monkeypatch, tmp_path: Path) -> None:
    import sys
    import types

    module = types.ModuleType("tilewise_test_exotic")
    module.FORMAT = MISSING
    monkeypatch.setitem(sys.modules, "tilewise_test_exotic", module)
    formats.register("tilewise_test_exotic:FORMAT")
    try:
        with pytest.raises(
            SourceOpenError, match=r"needs the tilewise_no_such_library package.*pip install 'tilewise\[exotic\]'"
        ):
            formats.open_source(tmp_path / "x.exotic")
    finally:
        formats.unregister("needs-extra")


def test_unknown_format_name() -> None:
    with pytest.raises(ConfigError, match="'nope' is not one of dicom, geotiff, pairs, vector, zarr"):
        formats.get_format("nope")
