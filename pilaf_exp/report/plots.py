"""The figures: reward against KL (paper Fig. 2-5; a sweep's, and each run's own `reward_kl.png`) and J
against annotations."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from pilaf_exp.infra.cli import sampler_names, sampler_order  # noqa: E402
from pilaf_exp.infra.names import ANNOTATIONS, EVAL_J, EVAL_KL, EVAL_REWARD  # noqa: E402

PALETTE = ["#1f77b4", "#2ca02c", "#ff7f0e", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
KNOWN = sampler_names()  # conf/sampler/, baseline first: each sampler keeps its colour in every figure


def colour_of(sampler: str, index: int) -> str:
    """A sampler's colour: by its place among the configured samplers, else by its place in this figure."""
    position = KNOWN.index(sampler) if sampler in KNOWN else len(KNOWN) + index
    return PALETTE[position % len(PALETTE)]


def by_sampler(frame: pd.DataFrame):
    """(index, sampler, rows) in the configured order (vanilla, best_of_n, hybrid, pilaf), others after."""
    for index, name in enumerate(sampler_order(frame["sampler"])):
        yield index, name, frame[frame["sampler"] == name].sort_values("step")


def save(fig: plt.Figure, stem: Path, suffixes: tuple[str, ...] = (".png", ".pdf")) -> list[Path]:
    paths = [stem.with_suffix(suffix) for suffix in suffixes]
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return paths


def mean_over_seeds(history: pd.DataFrame) -> pd.DataFrame:
    return history.groupby(["sampler", "step"], as_index=False).mean(numeric_only=True)


def plot_reward_kl(
    history: pd.DataFrame, stem: Path, title: str, suffixes: tuple[str, ...] = (".png", ".pdf")
) -> list[Path]:
    """One point per evaluation (mean over seeds), one colour per sampler, darker = later; `history`
    holds evaluations (`load_runs`' histories, or one run's with its sampler)."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    means = mean_over_seeds(history)
    for index, sampler, rows in by_sampler(means):
        base = np.array(to_rgb(colour_of(sampler, index)))
        late = rows["step"] / max(rows["step"].max(), 1)  # 0 = first evaluation, 1 = last
        colours = [tuple(1 - (0.25 + 0.75 * t) * (1 - base)) for t in late]  # white-ish -> full colour
        ax.plot(rows[EVAL_KL], rows[EVAL_REWARD], color=base, linewidth=0.8, alpha=0.5)
        ax.scatter(rows[EVAL_KL], rows[EVAL_REWARD], c=colours, edgecolors=[base], label=sampler, zorder=3)
    ax.set(xlabel="KL(pi_theta || pi_ref)", ylabel="reward r*", title=f"{title}: reward vs KL (darker = later)")
    ax.legend()
    fig.tight_layout()
    return save(fig, stem, suffixes)


def plot_j_vs_annotations(history: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    """J against annotations: mean over seeds, with the min-max band over seeds."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    grouped = history.groupby(["sampler", "step"])
    stats = grouped.agg(
        annotations=(ANNOTATIONS, "mean"),
        mean=(EVAL_J, "mean"),
        low=(EVAL_J, "min"),
        high=(EVAL_J, "max"),
    ).reset_index()
    for index, sampler, rows in by_sampler(stats):
        colour = colour_of(sampler, index)
        ax.plot(rows["annotations"], rows["mean"], color=colour, label=sampler, marker="o", markersize=3)
        ax.fill_between(rows["annotations"], rows["low"], rows["high"], color=colour, alpha=0.15)
    ax.set(xlabel="annotations (responses labelled)", ylabel="J = reward - beta KL", title=f"{title}: J vs annotations")
    ax.legend()
    fig.tight_layout()
    return save(fig, stem)
