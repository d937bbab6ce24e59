"""``run_batch``: segment an archive incrementally through one model pool, recording every scene.

For each scene listed (:mod:`pipeline.batch.sources`), the state record
(:mod:`pipeline.batch.state`) decides: skip it (done with the same input,
model and parameters, outputs in place) or segment it. Every scene to
segment is planned; those that cannot be planned fail alone. The rest
stream through one :func:`pipeline.infer.engine.run_plans` (one Ray Data
dataset, one model actor pool), and each scene's record is written the
moment it is published or fails, so a run killed later keeps what it
finished. Failed scenes are tried again, up to ``retries`` times, in a
fresh pass. A report (:mod:`pipeline.batch.report`) says what happened.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from models import Normalization
from pipeline.batch.report import BatchReport, SceneReport
from pipeline.batch.sources import SceneEntry, discover
from pipeline.batch.state import (
    STATE_DIR,
    SceneRecord,
    Status,
    canonical,
    input_fingerprint,
    model_fingerprint,
    params_of,
    read_record,
    record_path,
    write_record,
)
from pipeline.batch.storage import S3, gdal_path, is_url
from pipeline.config import PipelineConfig
from pipeline.infer.engine import SceneFailure, SceneOutput, run_plans
from pipeline.infer.exported import apply_export
from pipeline.infer.journal import JournalPlan, adopt_journal
from pipeline.infer.plan import (
    ScenePlan,
    check_model,
    check_outputs,
    plan_each,
    plan_scene,
    remove_stale_temp_files,
)
from pipeline.infer.run import USER_ERRORS, mask_path_for
from pipeline.ray_env import unwrap_user_error
from tiling.errors import ConfigError, SinkError, TilingError

__all__ = ["run_batch"]

log = logging.getLogger(__name__)

#: What looking at a scene may raise for its input's sake (a missing file, a bad option): not a bug.
_LISTING_ERRORS: tuple[type[Exception], ...] = (*USER_ERRORS, OSError)


@dataclass
class _Pending:
    """A scene to segment in this run."""

    entry: SceneEntry
    cfg: PipelineConfig
    mask: Path
    input: dict[str, Any]
    params: dict[str, Any]
    ours: bool  # a record file exists (even one that cannot be read): its outputs are the batch's to replace
    attempts: int  # attempts since the scene last changed, before this run
    report: SceneReport
    resumable: bool = False  # the last attempt had the same input, model and parameters: its journal is good


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _internal(src: str | Path, e: BaseException) -> str:
    """The report's line for an error that is not the input's fault: a bug in tilewise or in a format plugin.

    The traceback goes to the debug log (``-vv``), never to the report.
    """
    log.debug("%s: internal error", src, exc_info=e)
    # a read task's internal error reaches here as a TilingError holding "<type>: <message>"
    what = _one_line(e) if isinstance(e, TilingError) else f"{type(e).__name__}: {_one_line(e)}"
    return f"{src}: internal error ({what}); this is a bug, please report it"


def _scene_config(cfg: PipelineConfig, options: Mapping[str, Any]) -> PipelineConfig:
    """``cfg`` with a manifest row's reader options."""
    if not options:
        return cfg
    return replace(cfg, input=replace(cfg.input, **options)).validate()


class _Batch:
    """One call of :func:`run_batch`: its scenes, records and report."""

    def __init__(
        self, out: Path, cfg: PipelineConfig, model: torch.nn.Module | None, norm: Normalization | None, bar: Any
    ) -> None:
        self.out, self.cfg, self.model, self.norm, self.bar = out, cfg, model, norm, bar
        self.remote: str | None = None  # an s3:// --out: ``out`` is then the local staging folder
        self.s3: S3 | None = None
        self.model_fp = model_fingerprint(cfg, model)
        self.pending: dict[Path, _Pending] = {}

    def triage(self, entries: Sequence[SceneEntry], report: BatchReport) -> list[_Pending]:
        """A report line for every scene; the scenes to segment (the rest are skipped or failed)."""
        todo: list[_Pending] = []
        claimed: dict[Path, str] = {}
        for entry in entries:
            line = SceneReport(entry.src)
            report.scenes.append(line)
            try:
                cfg = _scene_config(self.cfg, entry.options)
                mask = mask_path_for(gdal_path(entry.src), self.out, cfg.output_format)
                line.mask = str(mask)
                if mask in claimed:
                    raise ConfigError(
                        f"{entry.src}: {claimed[mask]} writes the same mask {mask.name}; give the scenes distinct "
                        "names or run them into different --out folders"
                    )
                claimed[mask] = entry.src
                pending = self.pending_of(entry, cfg, mask, line)
            except _LISTING_ERRORS as e:
                line.error = _one_line(e)
            except Exception as e:  # a bug while looking at one scene: that scene fails alone
                line.error, line.internal = _internal(entry.src, e), True
            else:
                if pending is not None:
                    todo.append(pending)
                    continue
            self.bar.update(1)
        return todo

    def pending_of(self, entry: SceneEntry, cfg: PipelineConfig, mask: Path, line: SceneReport) -> _Pending | None:
        """The scene to segment, or None (its report line says skipped) when its record shows it done."""
        fp = input_fingerprint(entry.src)
        params = params_of(cfg, self.norm)
        path = record_path(self.out, mask)
        record = read_record(path)
        if record is not None and record.matches(fp, self.model_fp, params, self.exists):
            line.status, line.tiles = Status.SKIPPED.value, record.tiles
            return None
        same = record is not None and dict(record.input) == fp and record.model == self.model_fp
        before = record.attempts if same and record is not None else 0
        resumable = same and record is not None and canonical(record.params) == canonical(params)
        # a record, even one that cannot be read, says a batch wrote here: its outputs are ours to replace
        return _Pending(entry, cfg, mask, fp, params, path.is_file(), before, line, resumable)

    def exists(self, output: str) -> bool:
        """Whether a recorded output is there (an object, with an s3:// --out)."""
        if is_url(output):
            return self.s3 is not None and self.s3.head(output) is not None
        return Path(output).exists()

    def url(self, path: Path) -> str:
        """Where a staged file goes with an s3:// --out."""
        assert self.remote is not None
        return f"{self.remote.rstrip('/')}/{path.relative_to(self.out).as_posix()}"

    def record(self, p: _Pending, status: Status, error: str = "", outputs: Sequence[str] = (), **timing: Any) -> None:
        """Write ``p``'s state record (and upload it, with an s3:// --out)."""
        path = record_path(self.out, p.mask)
        mask = self.url(p.mask) if self.remote else str(p.mask)
        write_record(
            path,
            SceneRecord(
                p.entry.src, mask, tuple(outputs), p.input, self.model_fp, p.params, status.value,
                error, p.attempts + p.report.attempts, **timing,
            ),
        )  # fmt: skip
        if self.s3 is not None:
            self.s3.upload(path, self.url(path))

    def publish(self, p: _Pending, published: Sequence[Path]) -> list[str]:
        """Where the outputs are for good: uploaded and removed from the stage with an s3:// --out.

        Raises:
            SinkError, ConfigError: if an object is in the way that tilewise may not replace (nothing is uploaded).
        """
        if self.s3 is None:
            return [str(p) for p in published]
        urls = [self.url(path) for path in published]
        for url in urls:
            self.check_remote(p, url)
        for path, url in zip(published, urls):
            self.s3.upload(path, url)
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        return urls

    def check_remote(self, p: _Pending, url: str) -> None:
        """Refuse to upload over an object tilewise did not write, or (without --overwrite) one it did.

        Raises:
            SinkError: if an object at ``url`` (or under it, for a store) was not written by tilewise.
            ConfigError: if tilewise wrote it, but neither ``--overwrite`` nor the scene's record allows replacing it.
        """
        assert self.s3 is not None
        found = self.s3.objects_at(url)
        foreign = [u for u in found if not self.s3.written_by_tilewise(u)]
        if foreign:
            raise SinkError(
                f"{foreign[0]}: exists and was not written by tilewise, so it is never replaced; "
                "move it away or choose another --out"
            )
        if found and not (self.cfg.overwrite or p.ours):
            raise ConfigError(f"{url}: exists; pass --overwrite to replace it")

    def fail(self, p: _Pending, error: BaseException | str, internal: bool = False) -> None:
        """Mark ``p`` failed, in the report and (if it can be written) its record."""
        p.report.status = Status.FAILED.value
        p.report.error = error if isinstance(error, str) else _one_line(error)
        p.report.internal = internal
        try:
            self.record(p, Status.FAILED, p.report.error)
        except Exception as e:  # the report still says why; a later run tries the scene again
            log.error("%s: its state record could not be written (%s)", p.entry.src, _one_line(e))

    def plan(self, todo: Sequence[_Pending]) -> list[ScenePlan]:
        """Plan every scene of ``todo``; a scene that cannot be planned fails alone."""
        plans: list[ScenePlan] = []

        def plan_one(p: _Pending) -> ScenePlan:
            return plan_scene(0, gdal_path(p.entry.src), p.mask, p.cfg, self.norm, self.model)

        for p, planned in plan_each(todo, plan_one, catch=(Exception,)):
            p.report.attempts += 1
            try:
                if isinstance(planned, Exception):
                    raise planned
                plan = self.prepare(p, replace(planned, scene=len(plans)), plans)  # numbered among those that run
            except USER_ERRORS as e:
                self.fail(p, e)
                continue
            except Exception as e:  # a bug planning one scene: that scene fails alone
                self.fail(p, _internal(p.entry.src, e), internal=True)
                continue
            self.pending[Path(plan.src)] = p
            plans.append(plan)
        return plans

    def prepare(self, p: _Pending, plan: ScenePlan, plans: Sequence[ScenePlan]) -> ScenePlan:
        """Check a planned scene's outputs, tie a journal to its plan (adopting a killed run's), record its start.

        Raises:
            TilingError: for outputs that may not be written, or bands that do not fit the run's model.
        """
        check_outputs([plan], self.cfg.overwrite or p.ours)
        if self.remote is not None:
            for path in plan.outputs:
                self.check_remote(p, self.url(path))
        if plans and plan.channels != plans[0].channels:
            raise ConfigError(
                f"{p.entry.src}: gives the model {plan.channels} input channels, but {plans[0].src} gives "
                f"{plans[0].channels}; one run uses one model: choose the same bands for every scene"
            )
        journal = JournalPlan.of(
            plan.grid, plan.block, len(plan.request.class_names), plan.request.save_probs,
            {"input": p.input, "model": self.model_fp, "params": p.params},
        )  # fmt: skip
        resume = adopt_journal(plan.out, journal) if p.resumable else None
        # a record before any work: outputs of a run killed after publishing are then ours to replace
        self.record(p, Status.FAILED, "started, not finished (the run was killed or is still running)")
        p.ours = True
        return replace(plan, journal=journal, resume=resume)

    def on_result(self, plan: ScenePlan, result: SceneOutput | SceneFailure) -> None:
        """Record a scene the moment it is published or fails; whatever goes wrong here fails that scene alone."""
        p = self.pending.pop(Path(plan.src))
        if isinstance(result, SceneFailure):
            error = _internal(p.entry.src, result.error) if result.internal else result.error
            self.fail(p, error, result.internal)
            return
        try:
            outputs = self.publish(p, result.published)
        except USER_ERRORS as e:  # an object in the way: the scene is not done
            self.fail(p, e)
            return
        except Exception as e:  # an upload that failed
            self.fail(p, f"{p.entry.src}: uploading the mask failed ({_one_line(e)})")
            return
        p.report.status, p.report.error, p.report.internal = Status.DONE.value, "", False
        p.report.tiles, p.report.seconds = result.tiles, round(result.seconds, 3)
        p.report.resumed_tiles, p.report.mask = result.resumed, outputs[0]
        try:
            self.record(
                p, Status.DONE, outputs=outputs, tiles=result.tiles, resumed_tiles=result.resumed,
                seconds=result.seconds,
            )  # fmt: skip
        except Exception as e:  # published, but a later run will not know: it segments the scene again
            log.error("%s: published, but its state record could not be written (%s)", p.entry.src, _one_line(e))
        self.bar.update(1)


def run_batch(
    sources: Sequence[str | Path],
    out_dir: str | Path,
    config: PipelineConfig | None = None,
    retries: int = 1,
    model: torch.nn.Module | None = None,
    normalization: Normalization | None = None,
    progress: bool = True,
) -> BatchReport:
    """Segment every scene ``sources`` list into ``out_dir``, skipping those already done; returns the report.

    Args:
        sources: folders, globs, manifests or scenes (see :func:`pipeline.batch.sources.discover`).
        out_dir: an existing folder for the masks, the state records and the reports.
        config: options for every scene (a manifest row adds its own reader options).
        retries: how many more times a failed scene is tried in this run.
        model: any ``torch.nn.Module`` instead of DeepLabV3.
        normalization: per-channel mean/std; else the export's, else estimated per scene.
        progress: a progress bar over scenes (and one over tiles).

    The report is written under ``<out_dir>/.tilewise/runs/``. User errors
    of single scenes end in the report; a run that cannot go on (no model,
    Ray failing, actors dying) ends early with ``run_error`` set, keeping
    what it finished. Bugs and interrupts propagate.

    Raises:
        NoScenesError: if ``sources`` name no scene (the CLI exits with :data:`EXIT_NO_SCENES`).
        ConfigError: if ``out_dir`` is not a folder, or a source cannot be listed.
    """
    t0 = time.perf_counter()
    remote = str(out_dir) if is_url(out_dir) else None
    if remote is not None:
        stage = Path(tempfile.mkdtemp(prefix="tilewise-stage-"))
        try:
            return _run(sources, stage, config, retries, model, normalization, progress, t0, remote)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return _run(sources, Path(out_dir), config, retries, model, normalization, progress, t0, None)


def _run(
    sources: Sequence[str | Path], out: Path, config: PipelineConfig | None, retries: int,
    model: torch.nn.Module | None, normalization: Normalization | None, progress: bool, t0: float, remote: str | None,
) -> BatchReport:  # fmt: skip
    if not out.is_dir():
        raise ConfigError(f"{out}: --out must be an existing folder for the masks and the batch's records")
    if retries < 0:
        raise ConfigError(f"retries: must be 0 or more, got {retries!r}")
    cfg, trained = apply_export((config or PipelineConfig()).validate())
    if model is None:
        cfg.model.require_weights()
    s3 = S3() if remote is not None else None
    if s3 is not None and remote is not None:  # the records first: discovery leaves out the outputs they list
        for url in s3.list(f"{remote.rstrip('/')}/{STATE_DIR}/state/"):
            s3.download(url, out / STATE_DIR / "state" / url.rsplit("/", 1)[-1])
    entries = discover(sources, out, remote)
    report = BatchReport(remote or str(out))
    with tqdm(total=len(entries), unit="scene", desc="scenes", disable=not progress, position=0) as bar:
        batch = _Batch(out, cfg, model, normalization or trained, bar)
        batch.remote, batch.s3 = remote, s3
        report.model = batch.model_fp
        todo = batch.triage(entries, report)
        try:
            for attempt in range(retries + 1):
                if attempt:
                    todo = [p for p in todo if p.report.status == Status.FAILED.value]
                    if not todo:
                        break
                    log.warning("retrying %d failed scenes (attempt %d of %d)", len(todo), attempt + 1, retries + 1)
                _run_pass(batch, todo, progress)
        except USER_ERRORS as e:
            report.run_error = _one_line(e)
        except BaseException as e:
            cause = unwrap_user_error(e, USER_ERRORS)
            if cause is None:
                raise
            report.run_error = _one_line(cause)
        finally:
            for p in list(batch.pending.values()):  # what the run was doing when it stopped
                batch.fail(p, f"not finished: {report.run_error or 'the run stopped'}")
            batch.pending.clear()
        bar.update(len(entries) - bar.n)  # the failed scenes
    report.seconds = round(time.perf_counter() - t0, 3)
    files = report.write(Path(out))
    if batch.s3 is not None:
        for path in files:
            for name in (path.name, f"latest{path.suffix}"):
                batch.s3.upload(path.parent / name, batch.url(path.parent / name))
    return report


def _run_pass(batch: _Batch, todo: Sequence[_Pending], progress: bool) -> None:
    """Plan ``todo`` and run what could be planned through one dataset and one model pool."""
    plans = batch.plan(todo)
    if not plans:
        return
    check_model(batch.cfg, plans, batch.model)
    remove_stale_temp_files(p for plan in plans for p in plan.outputs)
    run_plans(plans, batch.cfg, batch.model, progress, on_result=batch.on_result)
