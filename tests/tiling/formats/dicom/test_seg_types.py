"""DICOM SEG types (BINARY, LABELMAP, FRACTIONAL), colours, codes and a full disk.

Every type is checked with dicom3tools' ``dciodvfy`` where it is installed
(``apt-get install dicom3tools``; ``.ci/run`` installs it where apt works)
and read back with highdicom.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest

from tests.conftest import SHARED
from tiling.core.labels import class_color
from tiling.core.windows import Window
from tiling.errors import ConfigError
from tiling.formats import open_sink, sink_options
from tiling.formats.base import ModelProvenance, SinkRequest
from tiling.formats.dicom import DEFAULT_SEG_CREATOR, DicomSegOptions, SegType
from tiling.formats.dicom.codes import load_segment_codes
from tiling.formats.dicom.series import DicomMultiframeSource, DicomSeriesSource

CT5N = SHARED / "dicom" / "series" / "pydicom_98892001_CT5N"
ECT = SHARED / "dicom" / "pydicom-data" / "eCT_Supplemental.dcm"
CLASSES = ("air", "soft tissue", "bone")
DCIODVFY = shutil.which("dciodvfy")
needs_dciodvfy = pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy not installed (apt-get install dicom3tools)")
#: What the distribution's dciodvfy (dicom3tools 2022) says of any LABELMAP SEG: it predates the SOP class.
UNKNOWN_IOD = "Error - Information Object Not found"


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """dciodvfy's (errors, warnings) for ``path``."""
    assert DCIODVFY is not None
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    return [ln for ln in lines if ln.startswith("Error")], [ln for ln in lines if ln.startswith("Warning")]


def _labels(src) -> np.ndarray:
    data, _ = src.read(Window((0, 0, 0), src.shape))
    labels = np.digitize(data[0], [-500.0, 300.0]).astype(np.uint8)
    labels[:, :3, :3] = 255  # nodata corner
    return labels


def _probs(labels: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    p = rng.random((len(CLASSES), *labels.shape)).astype(np.float32)
    return p / p.sum(axis=0)


def _write(src, out: Path, **options) -> tuple[tuple[Path, ...], np.ndarray, np.ndarray]:
    labels = _labels(src)
    probs = _probs(labels)
    request = SinkRequest(CLASSES, save_probs=bool(options.pop("save_probs", False)), options=options,
                          provenance=ModelProvenance("DeepLabV3-ResNet50", "w.pth", "ab" * 32, "tilewise 0.1.0"))  # fmt: skip
    sink = open_sink(out, src, None, request)
    sink.write(Window((0, 0, 0), src.shape), labels, probs)
    return sink.finalize(), labels, probs


@pytest.fixture(scope="module", params=["ct5n", "ect"])
def binary_seg(request, tmp_path_factory):
    src = DicomSeriesSource(CT5N) if request.param == "ct5n" else DicomMultiframeSource(ECT)
    out = tmp_path_factory.mktemp("binary") / f"{request.param}.dcm"
    published, labels, _ = _write(src, out)
    return published[0], src, labels


@needs_dciodvfy
def test_binary_seg_passes_dciodvfy_with_no_errors(binary_seg) -> None:
    errors, warnings = dciodvfy(binary_seg[0])
    assert errors == [] and warnings == []


def test_binary_is_the_default_and_reads_back(binary_seg) -> None:
    out, src, labels = binary_seg
    seg = hd.seg.segread(out)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.segmentation_type.value == "BINARY"
    assert seg.ContentCreatorName == DEFAULT_SEG_CREATOR == "tilewise^automatic", "dcmqi warns when it is absent"
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == [1, 2, 3]
    assert [s.SegmentLabel for s in seg.SegmentSequence] == list(CLASSES)
    ref = src.reference
    assert {uid for _, _, uid in seg.get_source_image_uids()} == set(ref.sop_instance_uids)
    assert seg.FrameOfReferenceUID == ref.frame_of_reference_uid
    if len(set(ref.files)) == 1:  # multi-frame source: by frame number
        frames = seg.get_pixels_by_source_frame(ref.sop_instance_uids[0], [i + 1 for i in ref.frame_indices],
                                                combine_segments=True)  # fmt: skip
    else:
        frames = seg.get_pixels_by_source_instance(list(ref.sop_instance_uids), combine_segments=True)
    np.testing.assert_array_equal(frames, np.where(labels == 255, 0, labels + 1))


def test_segments_carry_class_colours_codes_and_provenance(binary_seg) -> None:
    seg = hd.seg.segread(binary_seg[0])
    for k, item in enumerate(seg.SegmentSequence):
        lab = hd.color.CIELabColor(*(v / 65535 * s - o for v, s, o in zip(item.RecommendedDisplayCIELabValue,
                                                                           (100, 255, 255), (0, 128, 128))))  # fmt: skip
        assert np.allclose(lab.to_rgb(), class_color(k), atol=1), "display colour is the class colour"
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning == "Tissue"
        algo = item.SegmentationAlgorithmIdentificationSequence[0]
        assert "ab" * 32 in algo.AlgorithmParameters and "DeepLabV3-ResNet50" in algo.AlgorithmParameters


@pytest.mark.parametrize("which", ["ct5n", "ect"])
def test_labelmap_has_no_segment_zero_and_pads_the_background(which: str, tmp_path: Path) -> None:
    src = DicomSeriesSource(CT5N) if which == "ct5n" else DicomMultiframeSource(ECT)
    (out,), labels, _ = _write(src, tmp_path / "lm.dcm", seg_type="labelmap")
    seg = hd.seg.segread(out)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.7" and seg.segmentation_type.value == "LABELMAP"
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == [1, 2, 3]
    assert seg.PixelPaddingValue == 0 and seg.get_segment_numbers() == [1, 2, 3]
    volume = seg.get_volume(combine_segments=True).array
    expected = np.where(labels == 255, 0, labels + 1)  # background (nodata) is the padding value 0
    np.testing.assert_array_equal(np.bincount(volume.ravel(), minlength=4), np.bincount(expected.ravel(), minlength=4))
    if DCIODVFY is not None:
        errors, _ = dciodvfy(out)
        assert errors in ([], [UNKNOWN_IOD]), "only the SOP class the 2022 dciodvfy does not know"


def test_fractional_seg_of_the_probabilities(tmp_path: Path) -> None:
    src = DicomSeriesSource(CT5N)
    published, _, probs = _write(src, tmp_path / "p.dcm", save_probs=True)
    assert [p.name for p in published] == ["p.dcm", "p.probs.dcm"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.dcm", "p.probs.dcm"]
    seg = hd.seg.segread(published[1])
    assert seg.segmentation_type.value == "FRACTIONAL" and seg.SegmentationFractionalType == "PROBABILITY"
    assert seg.MaximumFractionalValue == 255 and [s.SegmentLabel for s in seg.SegmentSequence] == list(CLASSES)
    got = seg.get_pixels_by_source_instance(list(src.reference.sop_instance_uids), rescale_fractional=False)
    np.testing.assert_array_equal(got, np.rint(np.moveaxis(probs, 0, -1) * 255).astype(np.uint8))
    if DCIODVFY is not None:
        assert dciodvfy(published[1]) == ([], [])


@pytest.mark.parametrize(
    ("seg_type", "creator", "charset"),
    [
        ("binary", None, "ISO_IR 100"),
        ("labelmap", None, "ISO_IR 100"),
        ("binary", "Doe^Jane", "ISO_IR 100"),
        ("labelmap", "Radiology AI^Reader 2", "ISO_IR 100"),
        ("binary", "Müller^Jürgen=山田^太郎", "ISO_IR 192"),  # beyond the source's Latin-1: the SEGs become UTF-8
    ],
)
def test_every_seg_names_its_content_creator(tmp_path: Path, seg_type: str, creator: str | None, charset: str) -> None:
    options = {"seg_type": seg_type, "save_probs": seg_type == "binary"}
    if creator is not None:
        options["seg_creator"] = creator
    published, _, _ = _write(DicomSeriesSource(CT5N), tmp_path / "s.dcm", **options)
    assert len(published) == (2 if seg_type == "binary" else 1), "BINARY with its FRACTIONAL probabilities"
    for path in published:
        seg = hd.seg.segread(path)
        assert seg.ContentCreatorName == (creator or DEFAULT_SEG_CREATOR) and seg.SpecificCharacterSet == charset
        assert str(seg.PatientName) == "Doe^Peter", "the source's strings survive a change of character set"
        if DCIODVFY is not None:
            errors, warnings = dciodvfy(path)
            assert (errors, warnings) in (([], []), ([UNKNOWN_IOD], [])), (errors, warnings)


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ("", "seg_creator: an empty name"),
        ("Doe\\Jane", r"holds '\\\\', which a DICOM person name cannot"),
        ("Doe^Jane\n", r"holds '\\n'"),
        ("a=b=c=d", "4 '='-separated groups, a person name at most 3"),
        ("a^b^c^d^e^f", "has 6 components, a person name at most 5"),
        ("x" * 65 + "^", "has 66 characters, a person name at most 64"),
    ],
)
def test_seg_creator_must_be_a_person_name(given: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as e:
        sink_options("dicom", {"seg_creator": given})
    assert "\n" not in str(e.value), "one line"


def test_seg_creator_of_one_component_gets_its_caret_and_other_formats_refuse_it() -> None:
    assert sink_options("dicom", {"seg_creator": "Bono"}).seg_creator == "Bono^", "the same PN, spelled unambiguously"
    assert sink_options("dicom", {}).seg_creator == DEFAULT_SEG_CREATOR
    with pytest.raises(ConfigError, match=r"seg_creator \(--seg-creator\) does not apply to a ome-zarr output"):
        sink_options("zarr", {"seg_creator": "Doe^Jane"})


def test_segment_codes_from_a_mapping_file(tmp_path: Path) -> None:
    codes = tmp_path / "codes.yaml"
    codes.write_text(textwrap.dedent("""\
        default: {category: Tissue, type: Soft Tissue}
        bone: {category: Tissue, type: Bone}
        air: {category: "SCT:260787004:Physical object", type: {scheme: SCT, value: "417696007", meaning: Gas}}
    """))  # fmt: skip
    (out,), _, _ = _write(DicomSeriesSource(CT5N), tmp_path / "c.dcm", seg_codes=str(codes))
    seg = hd.seg.segread(out)
    types = [s.SegmentedPropertyTypeCodeSequence[0] for s in seg.SegmentSequence]
    assert [(t.CodingSchemeDesignator, t.CodeValue) for t in types] == [("SCT", "417696007"), ("SCT", "87784001"),
                                                                       ("SCT", "272673000")]  # fmt: skip
    assert seg.SegmentSequence[0].SegmentedPropertyCategoryCodeSequence[0].CodeMeaning == "Physical object"
    if DCIODVFY is not None:
        assert dciodvfy(out)[0] == []


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"bone": {"category": "Tissue", "type": "Bonez"}}', "not a SNOMED CT keyword"),
        ('{"lung": {"category": "Tissue", "type": "Lung"}}', "'lung' not among the classes"),
        ('{"bone": {"type": "Bone"}}', "'category' and 'type'"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_code_files_are_one_line_errors(tmp_path: Path, text: str, match: str) -> None:
    codes = tmp_path / "codes.json"
    codes.write_text(text)
    with pytest.raises(ConfigError, match=match):
        _write(DicomSeriesSource(CT5N), tmp_path / "x.dcm", seg_codes=str(codes))
    assert [p.name for p in tmp_path.iterdir()] == ["codes.json"]


def test_sink_options_are_checked_by_the_registry() -> None:
    assert sink_options("dicom", {"seg_type": "LabelMap"}) == DicomSegOptions(SegType.LABELMAP)
    assert sink_options("dicom", {}).seg_type is SegType.BINARY
    with pytest.raises(
        ConfigError, match=r"seg_type \(--seg-type\) does not apply to a cog output; it applies to DICOM \(dicom-seg\)"
    ):
        sink_options("geotiff", {"seg_type": "binary"})
    with pytest.raises(ConfigError, match="seg_type: 'fractional' is not one of binary, labelmap"):
        sink_options("dicom", {"seg_type": "fractional"})
    with pytest.raises(ConfigError, match="no such file"):
        sink_options("dicom", {"seg_codes": "/no/such/codes.yaml"})
    assert sink_options("zarr", {"seg_type": None}) is not None, "None means not given"


_FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from tiling.errors import SinkError
from tiling.formats.dicom.seg import DicomSegSink
from tiling.formats.dicom.series import DicomSeriesSource
import dataclasses
if sys.argv[2] == "rlimit":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a full disk says ENOSPC; a file-size limit EFBIG (and this signal)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
src = DicomSeriesSource(sys.argv[3])
geometry = dataclasses.replace(src.reference, shape=(5, 1024, 1024))  # 5 MiB of labels
try:
    DicomSegSink(Path(sys.argv[1]) / "seg.dcm", geometry, ["a", "b"])
except SinkError as e:
    print(e)
    sys.exit(3)
"""


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A 1 MiB tmpfs (needs root or CAP_SYS_ADMIN; skipped elsewhere)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root); the file-size-limit case covers the error path")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_a_full_disk_is_a_one_line_error_at_open(how: str, tmp_path: Path, request) -> None:
    folder = request.getfixturevalue("small_tmpfs") if how == "tmpfs" else tmp_path / "out"
    folder.mkdir(exist_ok=True)
    root = Path(__file__).resolve().parents[4]
    run = subprocess.run([sys.executable, "-c", _FULL_DISK, str(folder), how, str(CT5N)], capture_output=True,
                         text=True, cwd=root, timeout=120, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert run.returncode == 3, f"SIGBUS is -7 / 135: {run.returncode} {run.stderr[-400:]}"
    message = run.stdout.strip()
    assert "\n" not in message and "seg.dcm: no room for the label buffer (5.0 MiB)" in message
    assert list(folder.iterdir()) == [], "nothing left behind"


def test_codes_loader_reads_json(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"bone": {"category": "Tissue", "type": "Bone"}}))
    category, kind = load_segment_codes(f)["bone"]
    assert (category.value, kind.value) == ("85756007", "272673000")
