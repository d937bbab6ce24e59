"""A batch on a three-node Ray cluster on this machine, losing the model actor's node mid-run.

Run as a script (its own Ray cluster, apart from the test session's Ray):
``python -m tests.pipeline.batch.node_loss_job CLEAN ARCHIVE OUT``. One batch segments CLEAN's
scenes, then ARCHIVE's, with a gated model that runs one forward pass at a time; once the first
block of ARCHIVE's first scene is journaled (CLEAN's masks are then published, made before any
loss), the node of the model actor is removed while the model is held, then the gate opens. It
prints ``REMOVED <whether the node held the model actor>`` and the run's exit code and summary.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import ray
from ray._private import state as ray_state
from ray.cluster_utils import Cluster

from models import Normalization
from pipeline.batch import run_batch
from pipeline.config import InferenceConfig, ModelConfig, PipelineConfig, RayConfig, TilingConfig
from pipeline.infer.journal import count_records
from tests.support.models import Gate

NORM = Normalization((128.0,) * 3, (64.0,) * 3)
STORE = 80 * 2**20


def remove_a_node_mid_run(cluster: Cluster, workers: list, out: Path, gate: Gate) -> None:
    """Once the first output block of s0 is journaled, remove the worker node that holds the model actor."""
    allowed = 0
    while not any(count_records(p) for p in out.glob(".s0_mask.tif.*.journal")):
        allowed += 1
        gate.allow(allowed)
        gate.wait_until_held(allowed + 1)
        time.sleep(0.3)  # the last pass's tiles reach the stitcher and its journal
    table = ray_state.actors(actor_state_name="ALIVE").values()  # from the GCS; the dashboard is off
    node = next((a["Address"]["NodeID"] for a in table if "PredictUDF" in a["ActorClassName"]), None)
    victim = next((w for w in workers if w.node_id == node), workers[0])
    cluster.remove_node(victim)
    print("REMOVED", victim.node_id == node, flush=True)
    gate.open()


def main(clean: Path, archive: Path, out: Path) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": STORE})
    workers = [cluster.add_node(num_cpus=2, object_store_memory=STORE) for _ in range(2)]
    cluster.wait_for_nodes()
    cfg = PipelineConfig(
        TilingConfig(tile=64), ModelConfig(classes=2, precision="fp32"),
        InferenceConfig(batch=4, stall_timeout=180, max_restarts=3), RayConfig(address=cluster.address),
    )  # fmt: skip
    gate = Gate(out.parent)
    threading.Thread(target=remove_a_node_mid_run, args=(cluster, workers, out, gate), daemon=True).start()
    model = gate.model()
    run = run_batch([str(clean), str(archive)], out, cfg, model=model, normalization=NORM, progress=False)
    print("RUN", run.exit_code, run.summary().replace("\n", " | "), flush=True)
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(*map(Path, sys.argv[1:4]))
