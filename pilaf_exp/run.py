"""One experiment end to end: run(cfg) builds the parts, fits, writes the outputs, returns the summary.

The data's path: prompts (`data`) -> pairs (`sampling`) -> labels (`labelling`) -> DPO steps
(`training`) -> reward / KL / J (`evaluation`) -> the run directory (`run_output.run_files`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from pilaf_exp.build import build_parts
from pilaf_exp.config_checks import validate
from pilaf_exp.data.task import DemonstratingTask
from pilaf_exp.evaluation.policy_stats import describe_policy
from pilaf_exp.infra.ranks import gather_over_ranks
from pilaf_exp.infra.signals import leave_for_requeue, under_slurm, usr1_as_sigterm
from pilaf_exp.infra.threads import apply_thread_budget
from pilaf_exp.run_output import run_files

log = logging.getLogger(__name__)


def run(cfg: DictConfig, callbacks: Sequence[L.Callback] = ()) -> dict[str, Any]:
    """Run one experiment; write its outputs to cfg.output_dir; return the summary ({} on a stop
    signal and on ranks other than 0). `callbacks` go to every Lightning trainer of the run."""
    validate(cfg)
    out_dir = Path(cfg.output_dir)
    # Under DDP the other ranks re-run this function in the same directory: rank 0 owns it.
    lead = rank_zero_only.rank == 0
    if lead:
        run_files.claim_run_dir(out_dir, float(cfg.min_free_disk_gb))
        run_files.save_config(cfg, out_dir)
    threads = apply_thread_budget(cfg.threads)  # before any model is built
    L.seed_everything(cfg.seed, verbose=False)
    started = time.perf_counter()
    parts = build_parts(cfg, callbacks)
    # Again after building: whether this process built the world or reused it (build.build_world),
    # the run draws from the same state.
    L.seed_everything(cfg.seed, verbose=False)
    world, stopwatch, loggers = parts.world, parts.context.stopwatch, parts.context.loggers
    fixed = {}
    if parts.evaluator.exact is not None:  # the exact optimum on the exact evaluation's prompts
        fixed = parts.evaluator.exact.optimum()
    if isinstance(world.task, DemonstratingTask):
        fixed |= describe_policy(world.reference, world.task, float(cfg.algo.temperature))
    for logger in loggers:
        logger.log_metrics(fixed, step=0)
    try:
        with usr1_as_sigterm():
            fitted = parts.fit()
    except SIGTERMException:
        log.warning("stopped by a signal; checkpoint in %s: run the same command again to resume", out_dir)
        print(f"interrupted: checkpoint saved in {out_dir / 'checkpoints'}; run the same command again to resume")
        if under_slurm():
            leave_for_requeue()
        return {}
    record = fitted.record
    record.run_info["threads"] = threads
    if record.world_size > 1:  # each rank's own account, to check the ranks agree
        weights = gather_over_ranks(run_files.write_rank_report(out_dir, record, fitted.policy))
        if len(set(weights)) > 1:  # a gradient some rank did not reduce: every number after is wrong
            raise RuntimeError(f"the ranks ended on different policy weights (sha256 by rank: {weights})")
    if cfg.save_policy and lead:
        fitted.policy.save_pretrained(out_dir / "policy")
    if not lead:
        return {}
    names = {"algo": cfg.choices.algo, "sampler": cfg.choices.sampler}
    summary = run_files.summary(names, cfg, record, fixed, world.task.skipped)
    run_files.write_run(out_dir, summary, record, stopwatch.seconds, time.perf_counter() - started)
    for logger in loggers:
        logger.finalize("success")
    return summary
