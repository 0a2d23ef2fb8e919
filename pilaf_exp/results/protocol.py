"""The protocol's learning rate, chosen from vanilla's runs alone by a rule written down before any
sampler comparison was looked at (`sweeps/protocol_lr.yaml`; RESULTS.md, "Protocol"):

    the largest lr of the grid at which vanilla, in every protocol seed, (a) never loses more than
    0.1 of exact J between consecutive exact evaluations and (b) never jumps by more than 2 nats of
    sampled KL between consecutive evaluations; the smallest lr of the grid when none qualifies.

(a) asks for a learning curve that rises within noise; (b) excludes the KL bursts seen at the old
default. Other samplers' runs at the same grid only draw the sensitivity figure.

    python -m pilaf_exp.results.protocol <protocol sweep dir>   # prints the rule's table, then `lr=<value>`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from pilaf_exp.infra.cli import BASELINE_SAMPLER  # noqa: E402
from pilaf_exp.infra.names import EVAL_KL, EXACT_J  # noqa: E402
from pilaf_exp.report.markdown import markdown  # noqa: E402
from pilaf_exp.report.plots import colour_of  # noqa: E402
from pilaf_exp.report.runs import load_runs  # noqa: E402
from pilaf_exp.report.stats import mean_ci  # noqa: E402

MAX_J_DROP = 0.1  # exact J between consecutive exact evaluations
MAX_KL_JUMP = 2.0  # nats of sampled KL between consecutive evaluations


def learning_rates(runs: pd.DataFrame) -> pd.Series:
    """Each run's algo.lr, read from the resolved config it saved."""
    return runs["run_dir"].map(lambda d: float(OmegaConf.load(Path(d) / "config_resolved.yaml").algo.lr))


def run_checks(history: pd.DataFrame) -> dict[str, float]:
    """One run's worst exact-J drop and worst sampled-KL jump between consecutive evaluations."""
    rows = history.sort_values("step")
    exact = rows[EXACT_J].dropna().to_numpy()
    kl = rows[EVAL_KL].dropna().to_numpy()
    drop = float(np.max(exact[:-1] - exact[1:], initial=0.0))
    jump = float(np.max(np.abs(np.diff(kl)), initial=0.0))
    return {"worst exact-J drop": drop, "worst KL jump": jump, "final exact J": float(exact[-1])}


def rule_table(runs: pd.DataFrame, histories: pd.DataFrame) -> pd.DataFrame:
    """Per lr, vanilla's worst drop and jump over its seeds, and whether the lr qualifies."""
    vanilla = runs[runs["sampler"] == BASELINE_SAMPLER]
    checks = pd.DataFrame(
        [{"lr": row.lr, **run_checks(histories[histories["run_dir"] == row.run_dir])} for row in vanilla.itertuples()]
    )
    table = checks.groupby("lr").agg(
        seeds=("final exact J", "size"),
        worst_drop=("worst exact-J drop", "max"),
        worst_jump=("worst KL jump", "max"),
    )
    table["qualifies"] = (table["worst_drop"] <= MAX_J_DROP) & (table["worst_jump"] <= MAX_KL_JUMP)
    return table


def choose(table: pd.DataFrame) -> float:
    qualified = table.index[table["qualifies"]]
    return float(qualified.max() if len(qualified) else table.index.min())


def sensitivity_figure(runs: pd.DataFrame, path: Path) -> Path:
    """Final exact J against lr, per sampler: mean and 95% CI over the protocol seeds."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for index, (sampler, rows) in enumerate(runs.groupby("sampler", sort=False)):
        stats = [(lr, mean_ci(group[EXACT_J].to_numpy())) for lr, group in rows.groupby("lr")]
        lrs = [lr for lr, _ in stats]
        means = np.array([ci.mean for _, ci in stats])
        low = np.array([ci.low if ci.low == ci.low else ci.mean for _, ci in stats])
        high = np.array([ci.high if ci.high == ci.high else ci.mean for _, ci in stats])
        colour = colour_of(sampler, index)
        ax.errorbar(lrs, means, yerr=[means - low, high - means], color=colour, marker="o", capsize=3, label=sampler)
    ax.set(xscale="log", xlabel="learning rate", ylabel="final exact J (mean, 95% CI)", title="lr sensitivity")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The protocol's learning rate, from a protocol_lr sweep.")
    parser.add_argument("runs", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: <runs>/report)")
    args = parser.parse_args(argv)
    runs, histories = load_runs(args.runs)
    if runs.empty or BASELINE_SAMPLER not in set(runs["sampler"]):
        print(f"error: no {BASELINE_SAMPLER} runs under {args.runs}", file=sys.stderr)
        sys.exit(2)
    runs = runs.assign(lr=learning_rates(runs))
    table = rule_table(runs, histories)
    out = args.out or args.runs / "report"
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(table.reset_index().set_index("lr").round(3))
    (out / "protocol_rule.md").write_text(text)
    sensitivity_figure(runs, out / "protocol_lr_sensitivity.png")
    print(text)
    print(f"lr={choose(table):g}")


if __name__ == "__main__":
    main()
