"""The runs of a sweep in one process share one world (task, SFT reference, oracle), and a run on a
reused world writes the summary a freshly built world gives."""

from __future__ import annotations

import json

from pilaf_exp import build
from pilaf_exp.run import run

TIMING = ("seconds", "timing")


def summary_of(out) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    return {k: v for k, v in summary.items() if not any(word in k for word in TIMING)}


def test_a_run_on_the_reused_world_matches_one_on_a_fresh_world(small_cfg, tmp_path):
    first = small_cfg("sampler=vanilla", "seed=0", out=tmp_path / "first")
    second = small_cfg("sampler=pilaf", "seed=1", out=tmp_path / "reused")
    world = build.build_world(first)  # as a previous run of this process left it
    assert build.build_world(second) is world  # another sampler and seed: the same world
    run(second)

    build._last_world.clear()
    run(small_cfg("sampler=pilaf", "seed=1", out=tmp_path / "fresh"))
    assert build.build_world(second) is not world
    assert summary_of(tmp_path / "reused") == summary_of(tmp_path / "fresh")
    reused = build.build_world(second)
    assert build.build_world(small_cfg("oracle.target_std=1.5")) is not reused  # another oracle: built afresh
