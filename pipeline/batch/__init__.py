"""Archive runs: many scenes through one model pool, incremental and resumable (``tilewise batch``)."""

from pipeline.batch.report import EXIT_OK, EXIT_PARTIAL, EXIT_RUN_FAILED, BatchReport, SceneReport
from pipeline.batch.run import run_batch
from pipeline.batch.sources import SceneEntry, discover
from pipeline.batch.state import SceneRecord, Status

__all__ = [
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_RUN_FAILED",
    "BatchReport",
    "SceneEntry",
    "SceneRecord",
    "SceneReport",
    "Status",
    "discover",
    "run_batch",
]
