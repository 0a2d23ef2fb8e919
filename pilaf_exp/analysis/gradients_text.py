"""The results section of the gradient analysis (docs/results/gradients.md), written from the numbers:
what the paper claims, what was measured, and whether the measurements agree."""

from __future__ import annotations

import statistics

import pandas as pd

from pilaf_exp.infra.cli import BASELINE_SAMPLER
from pilaf_exp.report.stats import paired, verdict

PILAF = "pilaf"

CLAIMS = """\
## What the paper claims

PILAF (Feng et al., ICML 2025, arXiv 2502.04270, Sec. 4) derives its response sampling so that
(i) *optimization*: the expected gradient of the preference (reward-MLE / DPO) loss on the pairs it
samples points along the gradient of the oracle objective
J(pi) = E_x[E_{y~pi} r*(x, y) - beta KL(pi || pi_ref)], with the interpolation coefficient equal to
beta, where vanilla sampling (both responses from pi) carries no such guarantee; and (ii)
*statistics*: the gradient estimated from its labelled pairs is efficient along that direction.
Here both are measured exactly on the embedded task, for every sampler in `conf/sampler/`."""

METHOD = """\
## What was measured

`python -m pilaf_exp.analysis.gradients` (`pilaf_exp/analysis/`), per policy:

* **grad J, exact.** J(x) = sum_y pi(y|x)[r*(x,y) - beta(log pi(y|x) - log pi_ref(y|x))], so
  grad J = sum_y pi(y) A(y) grad log pi(y) with A = r* - beta(log pi - log pi_ref). Every response of
  every prompt is enumerated: the response tree is walked level by level with a KV cache and
  autograd (`analysis/tree.py`), so a weighted sum over all V^T responses is one differentiable walk
  over the sum_{{d<T}} V^d prefixes ({tree_positions:,} token positions for {responses:,} responses, against
  {full_positions:,} response positions, prompts aside, for full-sequence forwards; equal to them to rounding:
  `tests/analysis/test_gradients.py`). Nothing is truncated, and truncating would not pay: the
  policies' entropy is {entropy_low:.2f} to {entropy_high:.2f} nats per prompt, and holding all but 1e-2
  (1e-4) of a prompt's mass takes {kept_2:,.0f} ({kept_4:,.0f}) of its {responses:,} responses (means).
* **Expected DPO gradient, per sampler.** Pairs drawn by the sampler's own `sample()` (so whatever
  it does is what is measured), with the Bradley-Terry label probability s = sigma(r*(a) - r*(b))
  in place of a label: the expected loss s L(a > b) + (1 - s) L(b > a) has gradient
  beta(sigma(m) - s)(grad log pi(a) - grad log pi(b)), m the DPO margin. Two independent halves.
* **cosine** of minus that gradient with grad J (two halves pooled); its Monte Carlo error is
  |cos(half 1) - cos(half 2)| / 2 (a one-degree-of-freedom estimate: noisy itself).
* **gain / annotation** = lr <grad J, -g_DPO> / 2: the expected first-order change of J of a plain
  SGD step of size lr = `algo.lr` on one pair's loss, per annotation (2 per pair). Training uses AdamW,
  whose preconditioned step is not -g_DPO: this is the raw gradient's figure, not the optimizer's.
* **SNR**: the mean projection of a batch gradient (`algo.batch_size` pairs, prompts uniform over
  the test prompts, labels drawn from Bradley-Terry as in training) on grad J / |grad J|, divided
  by its standard deviation over batches. Exact over the labels; the projection of each response's
  grad log pi on grad J is a forward-mode derivative over the whole tree."""

CAVEATS = """\
## Caveats

* The policies are the SFT model and checkpoints of *vanilla* online DPO: every sampler is measured
  on the same policies, not on the trajectory it would produce itself.
* The gain is first-order plain SGD; the runs use AdamW (per-coordinate scaling), so a better
  aligned raw gradient need not give a better optimizer step.
* The prompts are the first test prompts (`eval.exact_prompts`), the same for every policy; J and
  grad J are theirs, not the whole test split's.
* At the SFT policy pi = pi_ref, so hybrid's pi_ref draws and PILAF's pi_plus / pi_minus are pi
  itself, and best-of-N's implicit reward is zero for every candidate: all samplers draw the same
  pair distribution there, and their step-0 differences are Monte Carlo noise only."""


def method(records: list[dict]) -> str:
    """The method, with the enumeration's sizes and the policies' spread from the results."""
    vocab, length = records[0]["vocab"], records[0]["length"]
    entropies = [r["mass"]["entropy"] for r in records]
    return METHOD.format(
        tree_positions=sum(vocab**d for d in range(length)),
        responses=vocab**length,
        full_positions=vocab**length * length,
        entropy_low=min(entropies),
        entropy_high=max(entropies),
        kept_2=statistics.mean(r["mass"]["responses_for_1-0.01"] for r in records),
        kept_4=statistics.mean(r["mass"]["responses_for_1-0.0001"] for r in records),
    )


def step_rows(summary: pd.DataFrame, step: int) -> pd.DataFrame:
    return summary[summary["step"] == step].set_index("sampler")


def comparison(stats: pd.Series, column: str, form: str) -> str:
    d = [form.format(stats[f"{column} diff{end}"]) for end in ("", " low", " high")]
    call = stats[f"{column} vs {BASELINE_SAMPLER}"]
    return f"{d[0]} ({call})" if call == "n/a" else f"{d[0]} [{d[1]}, {d[2]}] ({call})"


def claim_verdict(summary: pd.DataFrame, column: str, trained: list[int]) -> str:
    """PILAF against vanilla on one metric over the trained steps: agrees, disagrees or unresolved."""
    if PILAF not in set(summary["sampler"]) or f"{column} vs {BASELINE_SAMPLER}" not in summary.columns:
        return "not measured (no pilaf and vanilla results to pair)"
    calls = [step_rows(summary, s).loc[PILAF].get(f"{column} vs {BASELINE_SAMPLER}", "n/a") for s in trained]
    if not calls or "n/a" in calls:
        return "not measured (fewer than 2 seeds at a trained step)"
    if all(c == "better" for c in calls):
        return f"**agrees**: PILAF above vanilla at every trained step ({', '.join(map(str, trained))})"
    if "worse" in calls:
        worse = ", ".join(str(s) for s, c in zip(trained, calls) if c == "worse")
        return f"**disagrees**: PILAF below vanilla at step(s) {worse}"
    better = [str(s) for s, c in zip(trained, calls) if c == "better"]
    return f"**not resolved**: PILAF above vanilla at {len(better)} of {len(trained)} trained steps, ties elsewhere"


def leaders(rows: pd.DataFrame) -> str:
    """Which sampler has the highest mean of each metric."""
    return "; ".join(
        f"highest {c}: {rows[c].idxmax()} ({rows[c].max():.4g})" for c in ("cosine", "gain/annotation", "SNR")
    )


def findings(summary: pd.DataFrame) -> list[str]:
    steps = sorted(summary["step"].unique())
    lines = []
    if 0 in steps:
        zero = step_rows(summary, 0)
        spread = zero["cosine"].max() - zero["cosine"].min()
        lines.append(
            f"* Step 0 (one pair distribution for all samplers): cosines {zero['cosine'].min():.4f} to "
            f"{zero['cosine'].max():.4f} (spread {spread:.4f}; median Monte Carlo error of one analysis "
            f"{zero['cosine mc error'].median():.4f}): the noise floor of the comparison."
        )
    for step in (s for s in steps if s > 0):
        rows = step_rows(summary, step)
        text = f"* Step {step}: {leaders(rows)}."
        if PILAF in rows.index and "cosine diff" in rows.columns:
            pilaf = rows.loc[PILAF]
            text += f" PILAF - vanilla: cosine {comparison(pilaf, 'cosine', '{:+.4f}')}, "
            text += f"gain/annotation {comparison(pilaf, 'gain/annotation', '{:+.2e}')}, "
            text += f"SNR {comparison(pilaf, 'SNR', '{:+.3f}')}."
        lines.append(text)
    return lines


def coefficient_lines(rows: pd.DataFrame) -> list[str]:
    """PILAF's coefficient grid against coef = beta (plain `pilaf`), paired by seed, per step."""
    lines = []
    for step in sorted(rows["step"].unique()):
        here = rows[rows["step"] == step]
        base = here[here["sampler"] == PILAF].set_index("seed")
        for name in sorted(n for n in here["sampler"].unique() if n.startswith(f"{PILAF}[")):
            mine = here[here["sampler"] == name].set_index("seed")
            cells = []
            for column, key in (("cosine", "cosine"), ("gain/annotation", "gain_per_annotation"), ("SNR", "snr")):
                comparison = paired((mine[key] - base[key]).dropna())
                d, call = comparison.difference, verdict(comparison, higher_is_better=True)
                cells.append(f"{column} {d.mean:+.4g} [{d.low:+.4g}, {d.high:+.4g}] ({call})")
            lines.append(f"* Step {step}, {name} - pilaf: " + "; ".join(cells) + ".")
    return lines


def timing_lines(records: list[dict]) -> list[str]:
    policy = [r["seconds"]["policy"] for r in records]
    samplers = statistics.median(len(r["samplers"]) for r in records)
    setup = [r["seconds"]["setup"] for r in records]
    size = f"{samplers:.0f} samplers, {records[0]['prompts']} prompts, {records[0]['pairs_per_prompt_half']} pairs"
    return [
        f"* Per policy ({size} per prompt and half): median {statistics.median(policy):.0f} s, max "
        f"{max(policy):.0f} s; set-up (world, cached table) median {statistics.median(setup):.0f} s."
    ]


def section(summary: pd.DataFrame, rows: pd.DataFrame, records: list[dict], table: str, figure: str) -> str:
    trained = sorted(s for s in summary["step"].unique() if s > 0)
    first = records[0]
    seeds = sorted(rows["seed"].unique())
    verdicts = [f"* (i) alignment, cosine with grad J: {claim_verdict(summary, 'cosine', trained)}.",
                f"* (i') first-order gain in J per annotation: {claim_verdict(summary, 'gain/annotation', trained)}.",
                f"* (ii) signal-to-noise along grad J: {claim_verdict(summary, 'SNR', trained)}."]  # fmt: skip
    cosines = rows[rows["step"] > 0]["cosine"]
    parts = [
        "# Does each sampler's expected DPO gradient point along grad J? (issue 14)",
        "Generated by `python -m pilaf_exp.analysis.gradients_report` from the JSON results of "
        "`python -m pilaf_exp.analysis.gradients`; do not edit by hand.",
        CLAIMS,
        method(records),
        f"Setting: beta = {first['beta']}, lr = {first['lr']}, batch = {first['batch_size']} pairs, "
        f"{first['prompts']} test prompts, {first['pairs_per_prompt_half']} pairs per prompt in each half, "
        f"policies at steps {', '.join(map(str, sorted(summary['step'].unique())))}, "
        f"seeds {', '.join(map(str, seeds))}; "
        f"{len(records)} analyses.",
        "## Results\n\nMean over seeds [95% t interval]; 'X - vanilla' paired by seed, (better/worse) only when "
        "its interval excludes 0. MC error: median over seeds of the cosine's two-halves error.\n\n" + table,
        f"![cosine, gain and SNR by sampler along training]({figure})",
        "## Does it agree?\n\n"
        + "\n".join(verdicts)
        + (
            f"\n* Cosines at trained steps range {cosines.min():.3f} to {cosines.max():.3f}: "
            "no sampler's expected gradient is exactly along grad J."
            if len(cosines) and cosines.max() < 0.999
            else ""
        ),
        "### By step\n\n" + "\n".join(findings(summary)),
        "### PILAF's coefficient (theory: coef = beta; `pilaf` is coef = beta)\n\n"
        + ("\n".join(coefficient_lines(rows)) or "not measured"),
        "### Wall time\n\n" + "\n".join(timing_lines(records)),
        CAVEATS,
    ]
    return "\n\n".join(parts) + "\n"
