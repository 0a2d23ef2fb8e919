"""Iterative DPO's shared first round (paper protocol): vanilla sampling for every sampler
(`IterativeDPO.first_round_sampler`), computed once per (reference, oracle, algorithm settings,
seed), cached, and loaded by every sampler's run, so all of them continue from byte-identical
weights."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from transformers import AutoModelForCausalLM

from pilaf_exp.infra.cache import build_once, cache_key, file_sha256
from pilaf_exp.training.record import RunRecord
from pilaf_exp.training.resume import restore
from pilaf_exp.training.settings import Training

# Runs one round: (the round's training parts, checkpoint to resume from or None) -> trains the policy in place.
RoundRunner = Callable[[Training, "dict | None"], None]


def shared_first_round(
    settings: dict, run_round: RoundRunner, training: Training, resume: dict | None = None
) -> RunRecord:
    """Load round 1 into `training.policy` and return its record, or run it with `run_round` (from
    `resume`, a checkpoint taken while this run was building it, when given) and cache it first.
    `training`: the run's parts with round 1's annotator; `settings`: the algorithm's settings that
    fix a round's outcome (part of the cache key)."""
    policy, run = training.policy, training.run
    spec = {"stage": "iterative_dpo_round_1", "base": run.cache_spec, "algo": settings, "seed": run.seed}
    target = run.cache_dir / "iteration_1" / cache_key(spec)

    def build(entry: Path) -> None:  # runs round 1 here and stores it as the cache entry `entry`
        record = RunRecord()
        if resume is not None:
            restore(policy, record, resume)
        run_round(replace(training, record=record), resume)
        policy.save_pretrained(entry / "policy")
        shutil.copytree(run.output_dir / "preferences" / "iteration_1", entry / "preferences")
        (entry / "record.json").write_text(json.dumps({"spec": spec, **record.state()}, indent=2))

    # A concurrent run building the same round 1 holds the lock: this one waits and loads it.
    cached = not build_once(target, target / "record.json", build)
    if cached:  # the round's pairs as cached (over any a killed build of this run left behind)
        mine = run.output_dir / "preferences" / "iteration_1"
        shutil.rmtree(mine, ignore_errors=True)
        shutil.copytree(target / "preferences", mine)
    state = json.loads((target / "record.json").read_text())
    state.pop("spec")
    record = RunRecord(**state)
    record.notes["round1/checkpoint_sha256"] = file_sha256(target / "policy" / "model.safetensors")
    record.notes["round1/cached"] = cached
    if cached:  # replay round 1's evaluations into this run's loggers
        for row in record.history:
            for logger in run.loggers:
                logger.log_metrics({k: v for k, v in row.items() if k != "step"}, step=row["step"])
    # Every run continues from the stored weights, so all samplers start byte-identical.
    stored = AutoModelForCausalLM.from_pretrained(target / "policy", dtype=policy.dtype)
    policy.load_state_dict(stored.state_dict())
    policy.train()  # round 1 left it in eval mode (sampling)
    return record
