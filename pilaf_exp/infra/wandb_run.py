"""What a run's W&B record holds besides its metric history: the config, the group, the axes, and
the media and summary of a finished run. Plain functions of files and values; `loggers.RunLogger`
calls them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from pilaf_exp.infra.names import (
    ANNOTATIONS,
    EVAL_J,
    EXACT,
    EXACT_J,
    FIGURE,
    FINAL_TABLE,
    GLOBAL_STEP,
    OBJECTIVE,
    OPTIMUM_GAIN_SHARE,
    OPTIMUM_J_REF,
    OPTIMUM_J_STAR,
    SAMPLED,
    SFT,
    SFT_J,
    TIMING,
    metric_key,
)
from pilaf_exp.infra.wandb_records import items, records

RESOLVED_CONFIG = "config_resolved.yaml"  # the run's resolved config (run_output.run_files.save_config)
CHOICES = ("sampler", "algo", "model", "task", "oracle", "trainer")  # group choices: top-level config keys
# Logged at every evaluation, with the annotation count: eval/*, exact/*.
EVALUATIONS = (metric_key(SAMPLED, "*"), metric_key(EXACT, "*"))


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{"algo": {"beta": 0.1}} -> {"algo.beta": 0.1}: the keys W&B shows for a nested config."""
    if not isinstance(node, dict) or not node:
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


def run_config(out_dir: Path) -> dict[str, Any]:
    """The W&B run config: every leaf of the resolved config by its dotted path, and the group
    choices (`sampler`, `algo`, `model`, `task`, `oracle`, `trainer`) and `seed` as top-level keys,
    which the UI groups and filters by. {} when the run has not written its resolved config."""
    path = out_dir / RESOLVED_CONFIG
    if not path.exists():
        return {}
    resolved = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    choices = resolved.get("choices") or {}
    return flatten(resolved) | {key: choices[key] for key in CHOICES if key in choices} | {"seed": resolved["seed"]}


def sweep_dir() -> Path | None:
    """The sweep directory of a Hydra multirun job (`hydra.sweep.dir`, resolved once per sweep), else None."""
    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    return Path(str(hydra.sweep.dir)) if hydra.mode == RunMode.MULTIRUN else None


def sweep_group(experiment: str | None, fallback: str | None) -> str | None:
    """The W&B group: in a multirun, the experiment (else `fallback`, the algorithm) and the sweep's
    own id, its directory's last two parts ("table3_online-2025-06-01_12-00-00",
    "online-2025-06-01-12-00-00-123456"), so two sweeps of one table never share a group; for a
    single run, the experiment (None without one)."""
    where = sweep_dir()
    if where is None:
        return experiment
    name = experiment or fallback or "sweep"
    parts = [part for part in where.parts[-2:] if part not in (name, "multirun")]
    return "-".join([name, *parts])


def define_metrics(run: Any) -> None:
    """`eval/*` (and the exact evaluation's `exact/*`) against the annotations (the paper's efficiency
    axis); `eval/J`'s summary keeps its last and max. Every row also holds `trainer/global_step`,
    the other x-axis (the workspace's "by training step" section)."""
    run.define_metric(ANNOTATIONS)
    for glob in EVALUATIONS:
        run.define_metric(glob, step_metric=ANNOTATIONS)
    run.define_metric(EVAL_J, step_metric=ANNOTATIONS, summary="last,max")


def cell(step: Any, key: str, value: Any) -> tuple:
    """A logged value as (training step, key, number); media and other values by step and key only."""
    if isinstance(value, (int, float)):
        return step, key, "nan" if value != value else float(value)
    return step, key, None


def earlier_history(wandb_dir: Path, run_id: str) -> tuple[int, set[tuple]]:
    """What the run's earlier processes logged to this directory: the last W&B `_step` (-1 if
    none) and every value as a `cell`, so a resumed run continues after the one and need not log
    the other again (the steps it replays from its checkpoint give the same values)."""
    last, seen = -1, set()
    for log in sorted(wandb_dir.glob(f"*run-*-{run_id}/run-{run_id}.wandb")):
        try:
            for record in records(log):
                if record.WhichOneof("record_type") == "history":
                    row = items(record.history.item)
                    last = max(last, int(row["_step"]))
                    seen |= {cell(row.get(GLOBAL_STEP), k, v) for k, v in row.items() if not k.startswith("_")}
        except (OSError, ValueError):
            continue  # unreadable: that process left nothing to continue from
    return last, seen


def final_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The final reward / KL / J table: the SFT policy, the final policy and, where known, its exact
    values and J*."""
    columns = ["policy", "step", "reward", "KL", "J"]
    rows = [
        ["SFT", 0, *(summary[metric_key(SFT, metric)] for metric in OBJECTIVE)],
        ["final", summary["steps"], *(summary[metric_key(SAMPLED, metric)] for metric in OBJECTIVE)],
    ]
    if EXACT_J in summary:  # an enumerable task: the final policy's exact values too
        rows.append(["final (exact)", summary["steps"], *(summary[metric_key(EXACT, metric)] for metric in OBJECTIVE)])
    if OPTIMUM_J_STAR in summary:
        rows.append(["optimum (exact J*)", None, None, None, summary[OPTIMUM_J_STAR]])
    return columns, rows


def summary_values(summary: dict[str, Any], timing: dict[str, Any]) -> dict[str, Any]:
    """The run summary's own values: the SFT baseline, J*, J(pi_ref) and the gain share, the costs,
    and the timing split (`timing/*`). eval/* keep what define_metrics asks (eval/J: last and max)."""
    names = ("algo", "sampler", "seed", "experiment")  # in the config already
    values = {k: v for k, v in summary.items() if not k.startswith(metric_key(SAMPLED, "")) and k not in names}
    if OPTIMUM_J_STAR in summary:
        achievable = summary[OPTIMUM_J_STAR] - summary[OPTIMUM_J_REF]
        values[OPTIMUM_GAIN_SHARE] = (summary[EVAL_J] - summary[SFT_J]) / achievable
    return values | {metric_key(TIMING, k): v for k, v in timing.items()}


def run_outputs(out_dir: Path) -> tuple[dict[str, Any], dict[str, Any], int] | None:
    """(media row, summary values, final step) of a finished run (summary.json, timing.json and
    reward_kl.png written by run_output.run_files.write_run), None before the run has finished."""
    import wandb

    if not (out_dir / "summary.json").exists():
        return None
    summary = json.loads((out_dir / "summary.json").read_text())
    timing_file = out_dir / "timing.json"
    timing = json.loads(timing_file.read_text()) if timing_file.exists() else {}
    columns, rows = final_rows(summary)
    media: dict[str, Any] = {FINAL_TABLE: wandb.Table(columns=columns, data=rows)}
    if (out_dir / "reward_kl.png").exists():
        caption = f"{summary['algo']} DPO, {summary['sampler']}, seed {summary['seed']}: reward vs KL (darker = later)"
        media[FIGURE] = wandb.Image(str(out_dir / "reward_kl.png"), caption=caption)
    return media, summary_values(summary, timing), int(summary["steps"])
