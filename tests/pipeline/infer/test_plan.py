"""Planning many scenes at once: each gets its own plan or user error, in the scenes' order (no Ray)."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.config import PipelineConfig
from pipeline.infer.plan import ScenePlan, plan_each, plan_scene
from tiling.errors import SourceOpenError


def test_plans_come_in_order_with_each_scenes_own_user_error(scene_factory, tmp_path: Path) -> None:
    cfg = PipelineConfig().validate()
    good = [scene_factory(64 + 16 * i, 96, seed=i) for i in range(5)]
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a tiff")
    sources = [good[0], junk, *good[1:], tmp_path / "missing.tif"]

    def plan(src: Path) -> ScenePlan:
        return plan_scene(0, src, tmp_path / f"{src.stem}_mask.tif", cfg)

    out = list(plan_each(sources, plan, threads=4))
    assert [src for src, _ in out] == sources
    for src, planned in out:
        if src in good:
            assert isinstance(planned, ScenePlan) and planned.src == src
            # each scene's own plan: its grid covers its own shape
            assert planned.grid.shape == (64 + 16 * good.index(src), 96)
        else:
            assert isinstance(planned, SourceOpenError) and str(src) in str(planned)
    assert not list(tmp_path.glob("*_mask*")), "planning leaves no output behind"


def test_scenes_are_planned_at_the_same_time() -> None:
    # every plan waits until all four run together: this finishes only if they are concurrent
    barrier = threading.Barrier(4, timeout=30)

    def plan(item: int) -> ScenePlan:
        barrier.wait()
        raise SourceOpenError(f"scene {item}")

    out = list(plan_each(range(4), plan, threads=4))  # type: ignore[arg-type]
    assert [str(e) for _, e in out] == [f"scene {i}" for i in range(4)]


def test_a_bug_propagates_and_stops_planning() -> None:
    planned: list[int] = []
    never = threading.Event()

    def plan(item: int) -> ScenePlan:
        if item == 1:
            raise ZeroDivisionError("a bug")
        if item > 1:
            never.wait(1.0)  # slow scenes: the bug is seen while they are still queued
        planned.append(item)
        raise SourceOpenError("user")

    with pytest.raises(ZeroDivisionError):
        list(plan_each(list(range(200)), plan, threads=2))  # type: ignore[arg-type]
    assert len(planned) <= 3, "only the scenes already running finish; the queued ones are dropped"


def test_scenes_planned_together_hash_a_shared_checkpoint_once(tmp_path: Path) -> None:
    from pipeline import config

    weights = tmp_path / "model.pt"
    weights.write_bytes(b"w" * (4 << 20))
    cfg = PipelineConfig().validate()
    cfg = PipelineConfig(model=replace(cfg.model, weights=str(weights)))
    config._sha256_of.cache_clear()
    barrier = threading.Barrier(8, timeout=30)

    def plan(_: int) -> ScenePlan:
        barrier.wait()  # every thread asks at the same moment
        cfg.sink_request()
        raise SourceOpenError("planned")

    list(plan_each(range(8), plan, threads=8))  # type: ignore[arg-type]
    info = config._sha256_of.cache_info()
    assert (info.misses, info.hits) == (1, 7), "one thread read the checkpoint, the others took its hash"
