"""Tiny hostile or malformed inputs, written inside the tests (issue 7).

Each helper writes a file a careful user could meet: a few hundred bytes
that claim an image of absurd size, or a real sample with one header
element broken. Raw DICOM values go in as ``RawDataElement`` so that
pydicom writes them byte for byte, as a faulty scanner or tool would.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from tests.conftest import SHARED

CT5N = SHARED / "dicom" / "series" / "pydicom_98892001_CT5N"
ECT = SHARED / "dicom" / "pydicom-data" / "eCT_Supplemental.dcm"
SLIDE = SHARED / "dicom" / "highdicom" / "sm_image.dcm"


def claiming_vrt(path: Path, size: int = 1_000_000, bands: int = 1) -> Path:
    """A VRT of a few hundred bytes that declares ``size`` x ``size`` pixels and ``bands`` bands."""
    band = '<VRTRasterBand dataType="Byte" band="{}"/>'
    body = "".join(band.format(b + 1) for b in range(bands))
    path.write_text(f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}">{body}</VRTDataset>\n')
    return path


def vrt_over(path: Path, source: Path, size: tuple[int, int], data_type: str = "Byte") -> Path:
    """A VRT showing band 1 of ``source`` (rows, cols) = ``size``, one to one, as GDAL ``data_type``."""
    rows, cols = size
    path.write_text(
        f'<VRTDataset rasterXSize="{cols}" rasterYSize="{rows}"><VRTRasterBand dataType="{data_type}" band="1">'
        f'<SimpleSource><SourceFilename relativeToVRT="0">{source}</SourceFilename><SourceBand>1</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="{cols}" ySize="{rows}"/><DstRect xOff="0" yOff="0" xSize="{cols}" '
        f'ySize="{rows}"/></SimpleSource></VRTRasterBand></VRTDataset>\n'
    )
    return path


def claiming_zarr(path: Path, side: int = 100_000) -> Path:
    """A zarr v2 store of one ``.zarray`` (under 300 bytes) declaring one ``side`` x ``side`` uint8 chunk."""
    path.mkdir()
    meta = {
        "zarr_format": 2, "shape": [side, side], "chunks": [side, side], "dtype": "|u1", "compressor": None,
        "fill_value": 0, "order": "C", "filters": None, "dimension_separator": ".",
    }  # fmt: skip
    (path / ".zarray").write_text(json.dumps(meta))
    return path


def set_raw(item: Dataset, keyword: str, raw: bytes, vr: str = "DS") -> None:
    """Put ``raw`` bytes as element ``keyword`` of ``item``, unvalidated (pad to even length as DICOM does)."""
    tag = Tag(keyword)
    if len(raw) % 2:
        raw += b" "
    item._dict[tag] = RawDataElement(tag, vr, len(raw), raw, 0, False, True)


def broken_series(folder: Path, keyword: str, raw: bytes, file: str = "2392") -> Path:
    """A copy of the 5-slice CT series with element ``keyword`` of slice ``file`` set to ``raw``."""
    shutil.copytree(CT5N, folder)
    ds = pydicom.dcmread(folder / file)
    set_raw(ds, keyword, raw)
    ds.save_as(folder / file)
    return folder


def broken_multiframe(path: Path, keyword: str, raw: bytes, frame: int = 1) -> Path:
    """eCT_Supplemental with ``keyword`` in frame ``frame``'s functional groups (0-based) set to ``raw``."""
    ds = pydicom.dcmread(ECT)
    sequence = {
        "ImagePositionPatient": "PlanePositionSequence",
        "ImageOrientationPatient": "PlaneOrientationSequence",
        "PixelSpacing": "PixelMeasuresSequence",
        "RescaleSlope": "PixelValueTransformationSequence",
        "RescaleIntercept": "PixelValueTransformationSequence",
    }[keyword]
    groups = ds.PerFrameFunctionalGroupsSequence[frame]
    if sequence not in groups:  # shared by every frame: give this frame its own copy
        setattr(groups, sequence, copy.deepcopy(ds.SharedFunctionalGroupsSequence[0][sequence].value))
    set_raw(groups[sequence][0], keyword, raw)
    ds.save_as(path)
    return path


def broken_slide(path: Path, keyword: str, raw: bytes) -> Path:
    """The highdicom slide with ``keyword`` (PixelSpacing in the shared groups, or a top-level element) set to ``raw``."""
    ds = pydicom.dcmread(SLIDE)
    item = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0] if keyword == "PixelSpacing" else ds
    set_raw(item, keyword, raw)
    ds.save_as(path)
    return path
