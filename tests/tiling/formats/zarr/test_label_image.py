"""A mask written as a label image of its own OME-Zarr source: ``image.ome.zarr/labels/<name>``.

Run on copies of the real sample stores (NGFF 0.4 on zarr v2, 0.5 on zarr v3,
sharded): the label image is read back by ome-zarr-models (the NGFF schema,
and for 0.5 that label and image have the same levels), by ome-zarr-py's
reader where it is installed (what napari uses), and by tilewise's own label
reader; the image's files are compared byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from ome_zarr_models import v04, v05
from ome_zarr_models.v05.image_label import ImageLabel as ImageLabelV05

from tests.conftest import SHARED
from tiling.core.windows import Window, clip, plan_windows
from tiling.errors import ConfigError, SinkError
from tiling.formats import open_labels, open_sink, open_source, output_format
from tiling.formats.base import SinkRequest
from tiling.formats.zarr.labelimage import LabelImageSink

LANDSAT = SHARED / "zarr" / "rgb_byte_landsat.ome.zarr"  # NGFF 0.4, zarr v2, axes c y x, 2 levels
ECT = SHARED / "zarr" / "ect_supplemental_v05.ome.zarr"  # NGFF 0.5, zarr v3, sharded, axes z y x, 2 levels
CLASSES = ("low", "high")


def copy_store(store: Path, folder: Path) -> Path:
    """A writable copy of ``store`` in ``folder`` (the samples are read-only)."""
    out = folder / store.name
    shutil.copytree(store, out)
    for p in [out, *out.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)
    return out


def image_files(store: Path) -> dict[str, str]:
    """SHA-256 of every file of the image outside its ``labels`` group, by relative name."""
    return {
        str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.relative_to(store).parts[0] != "labels"
    }


def image_levels(store: Path) -> tuple[list[dict], list[tuple[int, ...]], list[list[dict]]]:
    """The image's axes, level shapes and per-level transforms, channel axis dropped."""
    group = zarr.open_group(store, mode="r")
    attrs = dict(group.attrs)
    ms = (attrs.get("ome") or attrs)["multiscales"][0]
    keep = [i for i, a in enumerate(ms["axes"]) if a.get("type") != "channel"]
    shapes = [tuple(group[d["path"]].shape[i] for i in keep) for d in ms["datasets"]]
    transforms = [
        [{**t, t["type"]: [t[t["type"]][i] for i in keep]} for t in d["coordinateTransformations"]]
        for d in ms["datasets"]
    ]
    return [ms["axes"][i] for i in keep], shapes, transforms


def label_attrs(label: Path) -> tuple[dict, dict, dict]:
    """(multiscale, image-label, tilewise) of a label image, 0.4 or 0.5 layout."""
    attrs = dict(zarr.open_group(label, mode="r").attrs)
    ome = attrs.get("ome", attrs)
    return ome["multiscales"][0], ome["image-label"], attrs["tilewise"]


def labels_of(src) -> np.ndarray:
    """Deterministic labels from the image itself, with a nodata corner."""
    data, _ = src.read(Window((0,) * len(src.shape), src.shape))
    labels = (data.mean(axis=0) > np.median(data)).astype(np.uint8)
    labels[(slice(0, 3),) * labels.ndim] = 255
    return labels


def write_mask(image: Path, name: str = "tilewise", level: int | None = None, **request) -> tuple[Path, np.ndarray]:
    """Segment ``image`` (at ``level``) into ``image/labels/<name>`` block by block; returns the path and labels."""
    out = image / "labels" / name
    with open_source(image, level=level) as src:
        labels = labels_of(src)
        sink = open_sink(out, src, None, SinkRequest(CLASSES, **request))
        assert isinstance(sink, LabelImageSink) and sink.into_source
        for w in plan_windows(src.shape, sink.block, sink.block, edge="pad"):
            w = clip(w, src.shape)
            sink.write(w, labels[w.to_slices()], np.stack([labels[w.to_slices()] == k for k in (0, 1)]).astype("f4"))
        assert not out.exists(), "only a hidden temporary store until finalize"
        assert sink.finalize() == (out,)
    return out, labels


def listed(image: Path) -> list[str]:
    attrs = dict(zarr.open_group(image / "labels", mode="r").attrs)
    return (attrs.get("ome") or attrs)["labels"]


@pytest.mark.parametrize("store", [LANDSAT, ECT], ids=["landsat-0.4-v2", "ect-0.5-v3-sharded"])
def test_label_image_is_read_as_a_label_of_its_image(tmp_path: Path, store: Path) -> None:
    image = copy_store(store, tmp_path)
    before = image_files(image)
    out, labels = write_mask(image)

    assert image_files(image) == before, "the image's arrays and attributes are byte for byte unchanged"
    assert listed(image) == ["tilewise"]
    assert sorted(p.name for p in (image / "labels").iterdir() if not p.name.startswith((".z", "zarr.json"))) == [
        "tilewise"
    ], "no temporary left"
    root = zarr.open_group(image, mode="r")
    if store == LANDSAT:  # the NGFF 0.4 schema: image, labels group, label image
        assert v04.Image.from_zarr(root).labels.attributes.labels == ["tilewise"]
        v04.ImageLabel.from_zarr(zarr.open_group(out, mode="r"))
    else:  # 0.5 also checks that the label image has the image's number of levels
        assert v05.Image.from_zarr(root).labels.label_paths == ["tilewise"]
        ImageLabelV05.from_zarr(zarr.open_group(out, mode="r"))
        assert zarr.open_group(out, mode="r")["0"].metadata.dimension_names == ("z", "y", "x")

    axes, shapes, transforms = image_levels(image)
    multiscale, image_label, tilewise = label_attrs(out)
    assert multiscale["axes"] == axes, "the image's axes without the channel"
    assert [d["coordinateTransformations"] for d in multiscale["datasets"]] == transforms
    label = zarr.open_group(out, mode="r")
    assert [label[d["path"]].shape for d in multiscale["datasets"]] == shapes, "one level per image level"
    np.testing.assert_array_equal(label["0"][...], labels)
    # the image's level 1 halves y and x (its last odd column dropped): every second pixel, by nearest
    np.testing.assert_array_equal(label["1"][...], labels[..., ::2, ::2][tuple(slice(n) for n in shapes[1])])
    assert image_label["source"] == {"image": "../../"}
    assert {p["label-value"]: p["class"] for p in image_label["properties"]} == {0: "low", 1: "high", 255: "nodata"}
    assert tilewise["class_names"] == list(CLASSES) and tilewise["level"] == 0

    with open_source(image) as src, open_labels(image, src, name="tilewise") as again:  # a training label too
        np.testing.assert_array_equal(again.read(Window((0,) * len(src.shape), src.shape))[0][0], labels)


def test_ome_zarr_py_finds_the_label_image_under_its_image(tmp_path: Path) -> None:
    """What napari's OME-Zarr plugin reads: a Label node of the image, with the image's level shapes."""
    reader = pytest.importorskip("ome_zarr.reader")
    io = pytest.importorskip("ome_zarr.io")
    for store in (LANDSAT, ECT):
        image = copy_store(store, tmp_path / store.stem)
        write_mask(image)
        nodes = list(reader.Reader(io.parse_url(str(image)))())
        labels = [n for n in nodes if any(isinstance(s, reader.Label) for s in n.specs)]
        assert [n.zarr.basename() for n in labels] == ["tilewise"]
        _, shapes, _ = image_levels(image)
        assert [tuple(d.shape) for d in labels[0].data] == shapes
        assert labels[0].metadata["name"] == "tilewise" and labels[0].metadata["properties"][1] == {"class": "high"}


@pytest.mark.parametrize(("store", "level"), [(LANDSAT, 1), (ECT, 1)], ids=["landsat", "ect"])
def test_segmenting_a_coarser_level_lines_up_with_every_image_level(tmp_path: Path, store: Path, level: int) -> None:
    image = copy_store(store, tmp_path)
    out, labels = write_mask(image, level=level)
    multiscale, _, tilewise = label_attrs(out)
    _, shapes, transforms = image_levels(image)
    assert tilewise["level"] == level and [d["coordinateTransformations"] for d in multiscale["datasets"]] == transforms
    group = zarr.open_group(out, mode="r")
    fine, coarse = group["0"][...], group["1"][...]
    assert fine.shape == shapes[0] and coarse.shape == shapes[1]
    np.testing.assert_array_equal(coarse, labels, "the segmented level is the mask itself")
    # every level-0 pixel takes the level-1 pixel whose centre is nearest in physical space (ties to the
    # later one); past the level-1 extent (landsat's level 1 dropped an odd column) the edge pixel
    s0, s1 = (np.array(t[0]["scale"]) for t in transforms)
    grids = np.meshgrid(*(np.arange(n) for n in shapes[0]), indexing="ij")
    nearest = [np.clip(np.floor(g * s0[a] / s1[a] + 0.5 + 1e-6).astype(int), 0, shapes[1][a] - 1)
               for a, g in enumerate(grids)]  # fmt: skip
    np.testing.assert_array_equal(fine, labels[tuple(nearest)])
    np.testing.assert_array_equal(fine[..., 5, :5], labels[..., 3, [0, 1, 1, 2, 2]])  # x halves: 0, .5, 1, 1.5, 2


def test_existing_labels_are_kept_and_a_foreign_one_is_never_replaced(tmp_path: Path) -> None:
    image = copy_store(LANDSAT, tmp_path)
    cells = zarr.open_group(image / "labels", mode="a", zarr_format=2)
    cells.attrs["labels"] = ["cells"]
    cells.create_group("cells").create_array("0", shape=(718, 791), dtype="u2", chunks=(256, 256), fill_value=7)
    theirs = {p: p.read_bytes() for p in (image / "labels").rglob("*") if p.is_file()}

    with open_source(image) as src:
        sink = open_sink(image / "labels" / "tilewise", src, None, SinkRequest(CLASSES))
        sink.write(Window((0, 0), src.shape), np.zeros(src.shape, np.uint8))
        # another tool lists a label image while the mask is being written
        meta = json.loads((image / "labels" / ".zattrs").read_text())
        (image / "labels" / ".zattrs").write_text(json.dumps({**meta, "labels": ["cells", "nuclei"]}))
        sink.finalize()
    assert listed(image) == ["cells", "nuclei", "tilewise"], "read when published, every entry kept"
    assert all(p.read_bytes() == b for p, b in theirs.items() if p.name != ".zattrs" or p.parent.name != "labels")

    kept = {p: p.read_bytes() for p in image.rglob("*") if p.is_file()}
    with (
        open_source(image) as src,
        pytest.raises(SinkError, match=r"labels/cells: exists and was not written by tilewise"),
    ):
        open_sink(image / "labels" / "cells", src, None, SinkRequest(CLASSES))
    assert {p: p.read_bytes() for p in image.rglob("*") if p.is_file()} == kept


def test_a_second_run_replaces_its_own_label_image_once_listed(tmp_path: Path) -> None:
    image = copy_store(ECT, tmp_path)
    write_mask(image)
    with open_source(image) as src:
        sink = open_sink(image / "labels" / "tilewise", src, None, SinkRequest(CLASSES))
        sink.write(Window((0, 0, 0), src.shape), np.ones(src.shape, np.uint8))
        sink.finalize()
    assert (zarr.open_group(image / "labels" / "tilewise", mode="r")["1"][...] == 1).all()
    assert listed(image) == ["tilewise"] and sorted(os.listdir(image / "labels")) == ["tilewise", "zarr.json"]


def test_probabilities_go_to_probs_inside_the_label_image(tmp_path: Path) -> None:
    image = copy_store(LANDSAT, tmp_path)
    out, labels = write_mask(image, save_probs=True)
    probs = zarr.open_group(out / "probs", mode="r")
    v04.Image.from_zarr(probs)
    np.testing.assert_array_equal(probs["0"][1], np.where(labels == 1, 255, 0))
    assert v04.Image.from_zarr(zarr.open_group(image, mode="r")).labels.attributes.labels == ["tilewise"]


def test_abort_leaves_the_image_store_as_it_was(tmp_path: Path) -> None:
    image = copy_store(ECT, tmp_path)
    before = sorted(os.listdir(image))
    with open_source(image) as src:
        sink = open_sink(image / "labels" / "tilewise", src, None, SinkRequest(CLASSES))
        sink.write(Window((0, 0, 0), (1, 256, 256)), np.zeros((1, 256, 256), np.uint8))
        sink.abort()
    assert sorted(os.listdir(image)) == before, "not even an empty labels folder"


def test_a_label_image_of_another_image_or_a_bad_name_is_refused(tmp_path: Path) -> None:
    landsat, ect = copy_store(LANDSAT, tmp_path), copy_store(ECT, tmp_path)
    with open_source(landsat) as src:
        with pytest.raises(ConfigError, match=r"a label image of .*ect_supplemental_v05.ome.zarr is a mask of that"):
            open_sink(ect / "labels" / "x", src, None, SinkRequest(CLASSES))
        with pytest.raises(ConfigError, match=r"'\.x' is not a label name"):
            open_sink(landsat / "labels" / ".x", src, None, SinkRequest(CLASSES))
    assert not (ect / "labels").exists() and not (landsat / "labels").exists()


def test_an_out_inside_a_zarr_store_is_zarr() -> None:
    assert output_format(Path("image.ome.zarr/labels/mask")).name == "zarr"
    with pytest.raises(ConfigError, match="cannot tell the output format"):
        output_format(Path("folder.d/mask"))


def test_time_and_channel_axes_and_a_translated_pyramid(tmp_path: Path) -> None:
    """t, c, z, y, x with level 1's pixel centres half a level-0 pixel in: the label keeps t, drops c."""
    image = tmp_path / "tczyx.ome.zarr"
    group = zarr.open_group(image, mode="w-", zarr_format=2)
    rng = np.random.default_rng(1)
    group.create_array("0", shape=(1, 2, 2, 8, 10), chunks=(1, 1, 1, 4, 4), dtype="u1")[...] = rng.integers(
        0, 255, (1, 2, 2, 8, 10)
    )
    group.create_array("1", shape=(1, 2, 2, 4, 5), chunks=(1, 1, 1, 4, 4), dtype="u1")
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"},
            *({"name": n, "type": "space", "unit": "micrometer"} for n in "zyx")]  # fmt: skip
    datasets = [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 2, 0.5, 0.5]}]},
        {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 2, 1, 1]},
                                                    {"type": "translation", "translation": [0, 0, 0, 0.25, 0.25]}]},
    ]  # fmt: skip
    group.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets}]
    out, labels = write_mask(image)
    assert labels.shape == (2, 8, 10)
    label = zarr.open_group(out, mode="r")
    assert (label["0"].shape, label["1"].shape) == ((1, 2, 8, 10), (1, 2, 4, 5))
    multiscale, _, _ = label_attrs(out)
    assert [a["name"] for a in multiscale["axes"]] == ["t", "z", "y", "x"]
    assert multiscale["datasets"][1]["coordinateTransformations"][1] == {
        "type": "translation", "translation": [0, 0, 0.25, 0.25]
    }  # fmt: skip
    np.testing.assert_array_equal(label["0"][0], labels)
    # level-1 pixel j is centred at 0.25 + j, between level-0 pixels 2j and 2j + 1 (at 0.5 j): the later one
    np.testing.assert_array_equal(label["1"][0], labels[:, 1::2, 1::2])
    v04.ImageLabel.from_zarr(label)
