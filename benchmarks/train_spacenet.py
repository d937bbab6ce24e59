"""Fine-tune on the real SpaceNet samples with 2 DDP workers, then segment each scene with the export.

Three runs, each from random initialisation (nothing is downloaded), on
``$TILEWISE_SHARED_DATA/segmentation`` (see SOURCES.md):

* Las Vegas roads: road mask 0/255 -> 2 classes with --label-map 255:1
* Atlanta buildings from the raster mask (0/255, pixel-aligned, no georeferencing)
* Atlanta buildings from geotiff_labels.geojson (attribute building=yes -> 1)

For each it prints the validation loss and the positive class's IoU per
epoch, next to a constant predictor's (all positive: IoU = the positive
share of the validation pixels; all background: 0), then runs
``tilewise infer SCENE --out MASK --weights model.pt`` with no other flag.

    .venv/bin/python benchmarks/train_spacenet.py [OUT]   # ~12 min on 2 idle cores
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(os.environ.get("TILEWISE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SEG = SHARED / "segmentation"
COMMON = [
    "--backbone", "mobilenet_v3_large", "--init", "none", "--lr", "2e-3", "--force", "--batch-size", "4",
    "--tile", "128", "--block", "256", "--epochs", "8", "--num-workers", "2", "--samples", "64", "--balanced",
    "--class-weights", "auto",
    "--class-names", "background,{}",
]  # fmt: skip
RUNS = {
    "vegas_roads": (SEG / "spacenet_vegas_roads/road_mask_input.tif", SEG / "spacenet_vegas_roads/sample_road_raster_mask.tif", ["--label-map", "255:1"], "road"),
    "atlanta_raster": (SEG / "spacenet_atlanta_buildings/sample_geotiff.tif", SEG / "spacenet_atlanta_buildings/sample_fp_mask.tif", ["--label-map", "255:1"], "building"),
    "atlanta_vector": (SEG / "spacenet_atlanta_buildings/sample_geotiff.tif", SEG / "spacenet_atlanta_buildings/geotiff_labels.geojson", ["--label-attribute", "building", "--label-map", "yes:1"], "building"),
}  # fmt: skip


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    py = [sys.executable, "-m", "pipeline"]
    for name, (image, labels, extra, positive) in RUNS.items():
        run = out / name
        args = [a.format(positive) for a in COMMON]
        t0 = time.perf_counter()
        subprocess.run([*py, "train", "--image", str(image), "--labels", str(labels), *extra, *args, "--out", str(run), "--no-progress"], check=True)  # fmt: skip
        seconds = time.perf_counter() - t0
        epochs = json.loads((run / "metrics.json").read_text())["epochs"]
        confusion = epochs[-1]["confusion"]
        share = sum(confusion[1]) / max(sum(map(sum, confusion)), 1)  # positive share of validation pixels
        print(f"\n{name}: {seconds:.0f} s for {len(epochs)} epochs on 2 DDP workers")
        print(f"  constant predictor: IoU({positive}) = {share:.3f} (all {positive}) or 0 (all background)")
        for e in epochs:
            print(f"  epoch {e['epoch']:2d}: train loss {e['train_loss']:.4f}, val loss {e['val_loss']:.4f}, "
                  f"IoU({positive}) {e['iou'][positive] or 0:.3f}, mIoU {e['miou']:.3f}")  # fmt: skip
        mask = run / "mask.tif"
        subprocess.run([*py, "infer", str(image), "--out", str(mask), "--weights", str(run / "model.pt"), "--no-progress"], check=True)  # fmt: skip
        print(f"  tilewise infer {image.name} --out {mask} --weights {run / 'model.pt'}: ok")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("tilewise-spacenet"))
