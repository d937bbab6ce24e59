"""Archive runs: many scenes through one model pool, incremental and resumable (``tilewise batch``)."""

from pipeline.batch.report import EXIT_NO_SCENES, EXIT_OK, EXIT_PARTIAL, EXIT_RUN_FAILED, BatchReport, SceneReport
from pipeline.batch.run import run_batch
from pipeline.batch.sources import NoScenesError, SceneEntry, discover
from pipeline.batch.state import SceneRecord, Status

__all__ = [
    "EXIT_NO_SCENES",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_RUN_FAILED",
    "BatchReport",
    "NoScenesError",
    "SceneEntry",
    "SceneRecord",
    "SceneReport",
    "Status",
    "discover",
    "run_batch",
]
