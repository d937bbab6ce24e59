"""Label readers, one per format, through the registry, on the shared samples where they exist."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
import rasterio
from affine import Affine
from rasterio.features import rasterize

from tests.conftest import write_scene
from tiling.core import Window
from tiling.errors import ConfigError, SourceOpenError
from tiling.formats import list_scenes, open_labels, open_source, sniff_labels, spec_of

ATLANTA = "segmentation/spacenet_atlanta_buildings"
VEGAS = "segmentation/spacenet_vegas_roads"


def _contract(labels, image) -> None:
    """What every label source promises: one band on the image's grid, padded reads, a reopening spec."""
    assert labels.count == 1 and labels.shape == image.shape
    w = Window(tuple(n - 4 for n in image.shape), (8,) * len(image.shape))
    data, valid = labels.read(w)
    assert data.shape == (1, *w.shape) and valid.shape == w.shape
    assert not valid[(slice(4, None),) * len(w.shape)].any()  # past the edge: invalid, zero
    assert not data[(0, *(slice(4, None),) * len(w.shape))].any()
    again = spec_of(labels).open_labels(image)
    inner = Window((0,) * len(image.shape), tuple(min(n, 16) for n in image.shape))
    np.testing.assert_array_equal(again.read(inner)[0], labels.read(inner)[0])
    again.close()


def test_label_raster_on_the_same_grid(shared_data: Path) -> None:
    with open_source(shared_data / VEGAS / "road_mask_input.tif") as img:
        with open_labels(shared_data / VEGAS / "sample_road_raster_mask.tif", img) as lab:
            assert lab.format == "geotiff"
            data, valid = lab.read(Window((0, 0), img.shape))
            with rasterio.open(shared_data / VEGAS / "sample_road_raster_mask.tif") as ds:
                np.testing.assert_array_equal(data[0], ds.read(1))
            assert set(np.unique(data)) == {0, 255} and valid.all()
            _contract(lab, img)


def test_unreferenced_mask_of_the_image_size_is_pixel_aligned(shared_data: Path) -> None:
    with open_source(shared_data / ATLANTA / "sample_geotiff.tif") as img:
        with open_labels(shared_data / ATLANTA / "sample_fp_mask.tif", img) as lab:
            data, _ = lab.read(Window((0, 0), img.shape))
            assert 0.14 < (data > 0).mean() < 0.15  # SOURCES.md: 14.6 % positive


def test_labels_on_another_grid_need_resample_labels(shared_data: Path, tmp_path: Path) -> None:
    with rasterio.open(shared_data / VEGAS / "sample_road_raster_mask.tif") as ds:
        half = ds.read(1)[::2, ::2]
        coarse = write_scene(
            tmp_path / "coarse.tif", half[None], crs=ds.crs.to_string(), block=None,
            transform=ds.transform @ Affine.scale(2),
        )  # fmt: skip
    with open_source(shared_data / VEGAS / "road_mask_input.tif") as img:
        with pytest.raises(ConfigError, match="on another grid .* pass --resample-labels"):
            open_labels(coarse, img)
        with open_labels(coarse, img, resample=True) as lab:
            data, _ = lab.read(Window((0, 0), img.shape))
            np.testing.assert_array_equal(data[0][::2, ::2], half)  # nearest: every value is a label value


def test_vector_labels_rasterised_window_by_window(shared_data: Path) -> None:
    path = shared_data / ATLANTA / "geotiff_labels.geojson"
    assert sniff_labels(path).name == "vector"
    with open_source(shared_data / ATLANTA / "sample_geotiff.tif") as img:
        with open_labels(path, img, attribute="building", value_map={"yes": 1}) as lab:
            whole, valid = lab.read(Window((0, 0), img.shape))
            features = json.loads(path.read_text())["features"]
            expect = rasterize(
                [(f["geometry"], 1) for f in features], out_shape=img.shape, transform=Affine(*img.reference.transform)
            )  # fmt: skip
            np.testing.assert_array_equal(whole[0], expect)
            assert valid.all() and 0.03 < whole.mean() < 0.06
            part, _ = lab.read(Window((300, 200), (256, 256)))
            np.testing.assert_array_equal(part[0], whole[0, 300:556, 200:456])
            _contract(lab, img)
        with pytest.raises(
            ConfigError, match="has no attribute 'class'; its attributes are .*building.* --label-attribute"
        ):
            open_labels(path, img, attribute="class")
        with pytest.raises(ConfigError, match="attribute building has value 'yes', which is no class"):
            open_labels(path, img, attribute="building")


def test_dicom_seg_frames_matched_by_referenced_instance(shared_data: Path, tmp_path: Path) -> None:
    # the SEG references the 3 evenly spaced CT2 slices; the outlier slice makes the folder no volume,
    # so the series is the 3 referenced files (linked, not copied)
    series = shared_data / "dicom/series/pydicom_77654033_CT2"
    seg_path = shared_data / "dicom/highdicom/seg_image_ct_binary.dcm"
    folder = tmp_path / "ct2"
    folder.mkdir()
    for name in ("17136", "17166", "17196"):
        os.symlink(series / name, folder / name)
    seg = pydicom.dcmread(seg_path)
    frames = seg.pixel_array
    by_uid = {
        f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID: frames[i]
        for i, f in enumerate(seg.PerFrameFunctionalGroupsSequence)
    }
    with open_source(folder) as img, open_labels(seg_path, img) as lab:
        assert lab.format == "dicom"
        data, valid = lab.read(Window((0, 0, 0), img.shape))
        uids = img.reference.sop_instance_uids
        for z, uid in enumerate(uids):
            np.testing.assert_array_equal(data[0, z], by_uid[uid])  # segment 1 -> class 1
        assert valid.all() and data.sum() > 0
        _contract(lab, img)
    with open_source(shared_data / "dicom/series/pydicom_98892001_CT5N") as other:
        with pytest.raises(ConfigError, match="references none of the 5 instances"):
            open_labels(seg_path, other)


def _ome_image_with_labels(path: Path, labels: np.ndarray) -> None:
    import zarr

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    ms = [{"version": "0.4", "axes": axes, "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1]}]}]}]  # fmt: skip
    root.attrs["multiscales"] = ms
    root.create_array("0", data=np.arange(labels.size, dtype=np.uint16).reshape(labels.shape), chunks=(16, 16))
    lab_group = root.create_group("labels")
    lab_group.attrs["labels"] = ["tissue"]
    tissue = lab_group.create_group("tissue")
    tissue.attrs["multiscales"] = ms
    tissue.attrs["image-label"] = {"version": "0.4"}
    tissue.create_array("0", data=labels, chunks=(16, 16))


def test_ome_zarr_labels_group(tmp_path: Path) -> None:
    labels = (np.arange(40 * 48).reshape(40, 48) % 3).astype(np.uint8)
    store = tmp_path / "image.ome.zarr"
    _ome_image_with_labels(store, labels)
    with open_source(store) as img, open_labels(store, img) as lab:
        assert lab.format == "zarr"
        data, _valid = lab.read(Window((0, 0), img.shape))
        np.testing.assert_array_equal(data[0], labels)
        _contract(lab, img)
    with open_source(store) as img, pytest.raises(SourceOpenError, match="has no label image 'cells'; it has tissue"):
        open_labels(store, img, name="cells")


def test_folder_of_image_mask_pairs(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for name in ("a", "b"):
        write_scene(tmp_path / "images" / f"{name}.tif", np.ones((3, 32, 32), np.uint8))
        write_scene(tmp_path / "masks" / f"{name}.tif", np.zeros((1, 32, 32), np.uint8))
    pairs = list_scenes(tmp_path)
    assert [(i.name, m.name) for i, m in pairs] == [("a.tif", "a.tif"), ("b.tif", "b.tif")]
    with open_source(pairs[0][0]) as img, open_labels(pairs[0][1], img) as lab:
        _contract(lab, img)
    (tmp_path / "images" / "c.tif").write_bytes(b"")
    with pytest.raises(SourceOpenError, match="c.tif: has no mask"):
        list_scenes(tmp_path)
