"""The gradient analysis's figure: cosine with grad J, first-order gain in J per annotation and batch
signal-to-noise ratio, by sampler along training, with 95% intervals over seeds."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pilaf_exp.analysis.gradients_table import METRICS  # noqa: E402
from pilaf_exp.infra.cli import sampler_order  # noqa: E402
from pilaf_exp.report.plots import KNOWN, colour_of  # noqa: E402

TITLES = {
    "cosine": "cos(-E[grad DPO loss], grad J)",
    "gain/annotation": "first-order gain in J per annotation\n(SGD, lr = algo.lr)",
    "SNR": "signal-to-noise along grad J\n(batch of algo.batch_size pairs)",
}


def colours(names: list[str]) -> dict[str, str]:
    """The configured samplers keep the report's colours; variants and others take unused ones."""
    known = {name: colour_of(name, 0) for name in names if name in KNOWN}
    spare = [c for c in plt.get_cmap("tab10").colors if matplotlib.colors.to_hex(c) not in known.values()]
    others = [name for name in names if name not in known]
    return known | {name: matplotlib.colors.to_hex(spare[i % len(spare)]) for i, name in enumerate(others)}


def plot(summary: pd.DataFrame, stem: Path) -> list[Path]:
    """One panel per metric, one line per sampler (variants dashed), bands = 95% t interval over seeds."""
    fig, axes = plt.subplots(1, len(METRICS), figsize=(5.2 * len(METRICS), 4.2))
    names = sampler_order(summary["sampler"])
    palette = colours(names)
    for name in names:
        rows = summary[summary["sampler"] == name].sort_values("step")
        colour = palette[name]
        style = "--" if name not in KNOWN else "-"
        for ax, column in zip(axes, METRICS):
            ax.plot(rows["step"], rows[column], style, color=colour, marker="o", markersize=3, label=name)
            ax.fill_between(rows["step"], rows[f"{column} low"], rows[f"{column} high"], color=colour, alpha=0.12)
    lowest = summary["cosine"].min()
    axes[0].set_ylim(max(-1.0, lowest - 0.15), 1.005)
    for ax, column in zip(axes, METRICS):
        ax.set_title(TITLES[column], fontsize=10)
        ax.set_xlabel("training step of the vanilla online-DPO run")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = stem.with_suffix(".png")
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return [path]
