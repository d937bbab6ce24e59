"""The report of one batch run: every scene's status and the reason for each failure, as JSON and as text.

Each run writes ``<out>/.tilewise/runs/<UTC time>.json`` and ``.txt``, and
copies them to ``latest.json`` and ``latest.txt`` beside them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.batch.state import STATE_DIR, Status
from tiling.formats.base import staged_file

__all__ = ["EXIT_NO_SCENES", "EXIT_OK", "EXIT_PARTIAL", "EXIT_RUN_FAILED", "BatchReport", "SceneReport"]

#: Every scene is done (segmented now, or skipped as already done).
EXIT_OK = 0
#: The run itself failed (bad options, no Ray, the model actors kept dying); see ``run_error``.
EXIT_RUN_FAILED = 1
#: The run finished but some scenes failed; the report names each with its reason.
EXIT_PARTIAL = 3
#: SOURCES named no scene at all (an empty folder, a glob matching nothing, a manifest without rows):
#: nothing ran and no report was written; a scheduled run over a mistyped path says so instead of "0 scenes".
EXIT_NO_SCENES = 4


@dataclass
class SceneReport:
    """One scene in a run's report.

    Attributes:
        src: the scene as listed.
        mask: its mask (empty when it could not be told).
        status: ``done``, ``skipped`` (its record matched) or ``failed``.
        error: why it failed, one line.
        internal: the failure is a bug rather than bad input.
        attempts: attempts in this run.
        tiles: tiles planned.
        resumed_tiles: tiles a killed run had finished that this run did not redo.
        seconds: from the start of its attempt until it was published.
    """

    src: str
    mask: str = ""
    status: str = Status.FAILED.value
    error: str = ""
    internal: bool = False
    attempts: int = 0
    tiles: int = 0
    resumed_tiles: int = 0
    seconds: float = 0.0


@dataclass
class BatchReport:
    """A batch run: what it found, did and skipped, and whether it ran to the end.

    Attributes:
        out: the output folder.
        model: the model fingerprint.
        started: when the run started, ISO 8601 UTC.
        seconds: the run's duration.
        scenes: one entry per scene, in listing order.
        run_error: why the run itself stopped early; empty when it ran to the end.
        files: where this report was written (JSON, text).
    """

    out: str
    model: str = ""
    started: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    seconds: float = 0.0
    scenes: list[SceneReport] = field(default_factory=list)
    run_error: str = ""
    files: tuple[str, ...] = ()

    def count(self, status: Status) -> int:
        """How many scenes ended with ``status``."""
        return sum(s.status == status.value for s in self.scenes)

    @property
    def exit_code(self) -> int:
        """:data:`EXIT_OK`, :data:`EXIT_PARTIAL` or :data:`EXIT_RUN_FAILED`."""
        if self.run_error:
            return EXIT_RUN_FAILED
        return EXIT_PARTIAL if self.count(Status.FAILED) else EXIT_OK

    def summary(self) -> str:
        """The readable report: the counts, then one line per failed scene with its reason."""
        done, skipped, failed = (self.count(s) for s in (Status.DONE, Status.SKIPPED, Status.FAILED))
        tiles = sum(s.tiles for s in self.scenes if s.status == Status.DONE.value)
        resumed = sum(s.resumed_tiles for s in self.scenes)
        lines = [
            f"tilewise batch into {self.out}: {len(self.scenes)} scenes, {done} segmented, {skipped} skipped "
            f"(already done), {failed} failed, in {self.seconds:.1f} s",
        ]
        if tiles:
            lines.append(
                f"{tiles} tiles segmented" + (f"; {resumed} tiles resumed from a killed run" if resumed else "")
            )
        if self.run_error:
            lines.append(f"the run stopped: {self.run_error}")
        lines += [f"FAILED {s.src}: {s.error}" for s in self.scenes if s.status == Status.FAILED.value]
        return "\n".join(lines)

    def write(self, folder: Path | None = None) -> tuple[Path, Path]:
        """Write the report as JSON and text under ``<folder or out>/.tilewise/runs/`` (atomically), and as ``latest``."""
        folder = Path(folder or self.out) / STATE_DIR / "runs"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = self.started.replace(":", "").replace("+0000", "Z")
        stamp = f"{stamp}-{os.getpid()}"
        json_path, text_path = folder / f"{stamp}.json", folder / f"{stamp}.txt"
        self.files = (str(json_path), str(text_path))
        for path, text in ((json_path, json.dumps(asdict(self), indent=1)), (text_path, self.summary())):
            for final in (path, folder / f"latest{path.suffix}"):
                _write_atomically(final, text + "\n")
        return json_path, text_path


def _write_atomically(final: Path, text: str) -> None:
    """Write ``text`` under a temporary name, then rename it to ``final``; no temporary is left."""
    with staged_file(final) as tmp:
        tmp.write_text(text)
