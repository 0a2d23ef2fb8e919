"""What a run leaves in its directory (summary, timing, history, figure, per-rank reports), and the table it prints."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from pilaf_exp.infra.cache import weights_fingerprint
from pilaf_exp.infra.errors import ConfigError
from pilaf_exp.infra.names import (
    ANNOTATIONS,
    EXACT,
    EXACT_GAIN,
    FIT,
    FORWARD_PASSES,
    IN_FIT,
    OBJECTIVE,
    OPTIMUM,
    OPTIMUM_J_REF,
    OPTIMUM_J_STAR,
    OPTIMUM_PROMPTS,
    SAMPLED,
    SAMPLING,
    SELECTION_PASSES,
    SETUP,
    SFT,
    TOTAL,
    TRAINING,
    J,
    metric_key,
)
from pilaf_exp.report.plots import plot_reward_kl
from pilaf_exp.training.record import RunRecord


def claim_run_dir(out_dir: Path, min_free_gb: float = 0.0) -> None:
    """Refuse to run over a finished run (its results would be overwritten), into a directory that
    cannot be written, or onto a disk with less than `min_free_gb` free: fail before training."""
    if (out_dir / "summary.json").exists():
        raise ConfigError(f"output_dir={out_dir} already holds a finished run (summary.json); choose another directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write_probe"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"output_dir={out_dir} is not writable ({error.strerror or error})") from None
    free_gb = shutil.disk_usage(out_dir).free / 1e9
    if free_gb < min_free_gb:
        raise ConfigError(f"output_dir={out_dir} has {free_gb:.2f} GB free, under min_free_disk_gb={min_free_gb}")


def save_config(cfg: DictConfig, out_dir: Path) -> None:
    (out_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_rank_report(out_dir: Path, record: RunRecord, policy: torch.nn.Module) -> str:
    """What one rank of a distributed run did (its pairs are in preferences/rank_<r>) and a hash
    of its final weights, which DDP and FSDP keep identical across ranks; returns the hash."""
    report = {
        "rank": record.rank,
        "world_size": record.world_size,
        "pairs_labelled": record.pairs_labelled,
        "policy_sha256": weights_fingerprint(policy),
    }
    write_json(out_dir / "ranks" / f"rank_{record.rank}.json", report)
    return report["policy_sha256"]


def summary(
    names: dict[str, str], cfg: DictConfig, record: RunRecord, fixed: dict[str, Any], skipped: dict[str, int]
) -> dict[str, Any]:
    """summary.json: the final evaluation, the SFT policy's, J* where known, costs and provenance.
    Deterministic: the same config and seed give the same bytes."""
    history = record.history
    return {
        **names,
        "seed": int(cfg.seed),
        "experiment": cfg.get("experiment_name") or names["algo"],
        "steps": history[-1]["step"],
        **{k: v for k, v in history[-1].items() if k != "step"},
        **{metric_key(SFT, metric): history[0][metric_key(SAMPLED, metric)] for metric in OBJECTIVE},
        **fixed,
        **{f"task/skipped_{reason}": count for reason, count in skipped.items()},
        **record.notes,
        "world_size": record.world_size,
    }


def write_run(
    out_dir: Path, summary: dict[str, Any], record: RunRecord, seconds: dict[str, float], wall: float
) -> None:
    """summary.json, timing.json, eval_history.csv and reward_kl.png; then the printed table."""
    split = timing(seconds, wall, pairs=record.pairs_labelled) | record.run_info
    write_json(out_dir / "summary.json", summary)
    write_json(out_dir / "timing.json", split)
    write_history(out_dir / "eval_history.csv", record.history)
    # The sweep report's figure for one run: one sampler, one seed.
    history = pd.DataFrame(record.history).assign(sampler=summary["sampler"])
    plot_reward_kl(history, out_dir / "reward_kl", f"{summary['algo']} DPO, {summary['sampler']}", suffixes=(".png",))
    print_result(summary, split, out_dir)


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def timing(seconds: dict[str, float], wall: float, pairs: int) -> dict[str, float]:
    """Wall time split by phase (`names.PHASES`); 'training' is the rest of the fit (loss, backward,
    optimizer, Lightning's loop), 'setup' everything before it (SFT cache, oracle calibration)."""
    split = {phase: seconds.get(phase, 0.0) for phase in (*IN_FIT, OPTIMUM)}
    fit = seconds.get(FIT, 0.0)
    split[TRAINING] = fit - sum(split[phase] for phase in IN_FIT)
    split[SETUP] = wall - fit - split[OPTIMUM]
    split[TOTAL] = wall
    split["sampling_ms_per_pair"] = 1000 * split[SAMPLING] / max(pairs, 1)
    return split


def print_result(summary: dict[str, Any], split: dict[str, float], out_dir: Path) -> None:
    console = Console()
    table = Table(title=f"{summary['algo']} DPO · sampler={summary['sampler']} · seed={summary['seed']}")
    for column in ("policy", "reward", "KL", "J"):
        table.add_column(column, justify="right")
    final = f"final (step {summary['steps']})"
    rows = [("SFT (step 0), sampled", SFT), (f"{final}, sampled", SAMPLED), (f"{final}, exact", EXACT)]
    for label, source in rows:
        if metric_key(source, J) in summary:  # exact values on an enumerable task only
            table.add_row(label, *(f"{summary[metric_key(source, m)]:.3f}" for m in OBJECTIVE))
    console.print(table)
    if OPTIMUM_J_STAR in summary:
        j_star, j_ref = summary[OPTIMUM_J_STAR], summary[OPTIMUM_J_REF]
        console.print(
            f"exact on {summary[OPTIMUM_PROMPTS]} test prompts: J(pi_ref) = {j_ref:.3f}, J* = {j_star:.3f}; the "
            f"final policy has {100 * summary[EXACT_GAIN]:.1f}% of the achievable gain J* - J(pi_ref) = "
            f"{j_star - j_ref:.3f}"
        )
    console.print(
        f"annotations {summary[ANNOTATIONS]:.0f} · forward passes/pair {summary[FORWARD_PASSES]:.2f} "
        f"(+{summary[SELECTION_PASSES]:.2f} selection)"
    )
    console.print(
        "wall {total:.1f}s = setup {setup:.1f} + exact J* {optimum:.1f} + sampling {sampling:.1f}"
        " + labelling {labelling:.1f} + training {training:.1f} + evaluation {evaluation:.1f}".format(**split)
    )
    console.print(f"outputs: {out_dir}")
