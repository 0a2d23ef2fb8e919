"""The gradient analysis's figure: cosine with grad J, first-order gain in J per annotation and batch
signal-to-noise ratio, by sampler along training, with 95% intervals over seeds."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pilaf_exp.analysis.gradients_report import METRICS, sampler_order  # noqa: E402
from pilaf_exp.report.plots import colour_of  # noqa: E402

TITLES = {
    "cosine": "cos(-E[grad DPO loss], grad J)",
    "gain/annotation": "first-order gain in J per annotation\n(SGD, lr = algo.lr)",
    "SNR": "signal-to-noise along grad J\n(batch of algo.batch_size pairs)",
}


def plot(summary: pd.DataFrame, stem: Path) -> list[Path]:
    """One panel per metric, one line per sampler (variants dashed), bands = 95% t interval over seeds."""
    fig, axes = plt.subplots(1, len(METRICS), figsize=(5.2 * len(METRICS), 4.2))
    for index, name in enumerate(sampler_order(summary["sampler"])):
        rows = summary[summary["sampler"] == name].sort_values("step")
        colour = colour_of(name, index)
        style = "--" if "[" in name else "-"
        for ax, column in zip(axes, METRICS):
            ax.plot(rows["step"], rows[column], style, color=colour, marker="o", markersize=3, label=name)
            ax.fill_between(rows["step"], rows[f"{column} low"], rows[f"{column} high"], color=colour, alpha=0.12)
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
