"""What a run leaves in its directory (summary, timing, history, figure, per-rank reports), and the table it prints."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from pilaf_exp.infra.cache import weights_fingerprint  # noqa: E402
from pilaf_exp.infra.errors import ConfigError  # noqa: E402
from pilaf_exp.training.record import RunRecord  # noqa: E402


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


def write_rank_report(out_dir: Path, record: RunRecord, policy: torch.nn.Module) -> None:
    """What one rank of a distributed run did (its pairs are in preferences/rank_<r>) and a hash
    of its final weights, which DDP keeps identical across ranks."""
    report = {
        "rank": record.rank,
        "world_size": record.world_size,
        "pairs_labelled": record.pairs_labelled,
        "policy_sha256": weights_fingerprint(policy),
    }
    write_json(out_dir / "ranks" / f"rank_{record.rank}.json", report)


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
        **{f"sft/{k.split('/')[1]}": history[0][k] for k in ("eval/reward", "eval/kl", "eval/J")},
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
    plot_reward_kl(record.history, out_dir / "reward_kl.png", title=f"{summary['algo']} DPO, {summary['sampler']}")
    print_result(summary, split, out_dir)


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


PHASES = ("sampling", "labelling", "ledger", "evaluation", "optimum")


def timing(seconds: dict[str, float], wall: float, pairs: int) -> dict[str, float]:
    """Wall time split by phase; 'training' is the rest of the fit (loss, backward, optimizer,
    Lightning's loop), 'setup' everything before it (SFT cache, oracle calibration)."""
    split = {phase: seconds.get(phase, 0.0) for phase in PHASES}
    in_fit = sum(split[p] for p in ("sampling", "labelling", "ledger", "evaluation"))
    split["training"] = seconds.get("fit", 0.0) - in_fit
    split["setup"] = wall - seconds.get("fit", 0.0) - split["optimum"]
    split["total"] = wall
    split["sampling_ms_per_pair"] = 1000 * split["sampling"] / max(pairs, 1)
    return split


def plot_reward_kl(history: list[dict[str, float]], path: Path, title: str) -> None:
    """Reward against KL at every evaluation; darker = later (paper Fig. 2-5)."""
    kl = [row["eval/kl"] for row in history]
    reward = [row["eval/reward"] for row in history]
    steps = [row["step"] for row in history]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(kl, reward, color="0.7", zorder=1)
    light_to_dark = LinearSegmentedColormap.from_list("steps", ["#c6dbef", "#08306b"])
    points = ax.scatter(kl, reward, c=steps, cmap=light_to_dark, vmin=0, edgecolors="k", zorder=2)
    fig.colorbar(points, ax=ax, label="training step")
    ax.set(xlabel="KL(pi_theta || pi_ref)", ylabel="reward r*", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_result(summary: dict[str, Any], split: dict[str, float], out_dir: Path) -> None:
    console = Console()
    table = Table(title=f"{summary['algo']} DPO · sampler={summary['sampler']} · seed={summary['seed']}")
    for column in ("policy", "reward", "KL", "J"):
        table.add_column(column, justify="right")
    table.add_row("SFT (step 0), sampled", *(f"{summary[f'sft/{k}']:.3f}" for k in ("reward", "kl", "J")))
    final = f"final (step {summary['steps']})"
    table.add_row(f"{final}, sampled", *(f"{summary[f'eval/{k}']:.3f}" for k in ("reward", "kl", "J")))
    if "exact/J" in summary:
        table.add_row(f"{final}, exact", *(f"{summary[f'exact/{k}']:.3f}" for k in ("reward", "kl", "J")))
    console.print(table)
    if "optimum/J_star" in summary:
        achievable = summary["optimum/J_star"] - summary["optimum/J_ref"]
        console.print(
            f"exact on {summary['optimum/prompts']} test prompts: J(pi_ref) = {summary['optimum/J_ref']:.3f}, "
            f"J* = {summary['optimum/J_star']:.3f}; the final policy has {100 * summary['exact/gain']:.1f}% of "
            f"the achievable gain J* - J(pi_ref) = {achievable:.3f}"
        )
    console.print(
        "annotations {a:.0f} · forward passes/pair {f:.2f} (+{s:.2f} selection)".format(
            a=summary["annotations/total"],
            f=summary["sampling/forward_passes_per_pair"],
            s=summary["sampling/selection_passes_per_pair"],
        )
    )
    console.print(
        "wall {total:.1f}s = setup {setup:.1f} + exact J* {optimum:.1f} + sampling {sampling:.1f}"
        " + labelling {labelling:.1f} + training {training:.1f} + evaluation {evaluation:.1f}".format(**split)
    )
    console.print(f"outputs: {out_dir}")
