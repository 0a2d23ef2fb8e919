"""A claim's primary endpoint from kept runs: per seed, paired with vanilla, one verdict word each."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from pilaf_exp.results.primary import decisions, per_seed, primary_table

STEPS = np.arange(0, 301, 30)


def write_run(path, sampler: str, seed: int, final: float) -> None:
    path.mkdir(parents=True)
    share = STEPS / STEPS[-1]
    history = pd.DataFrame({"step": STEPS, "annotations/total": 128.0 * STEPS, "exact/J": 0.2 + (final - 0.2) * share})
    history.to_csv(path / "eval_history.csv", index=False)
    (path / "summary.json").write_text(json.dumps({"sampler": sampler, "seed": seed, "algo": "online"}))


def test_primary_endpoint_paired_by_seed_with_one_word_per_sampler(tmp_path):
    vanilla = [0.60, 0.70, 0.50, 0.65, 0.55]
    finals = {
        "vanilla": vanilla,
        "pilaf": [v + d for v, d in zip(vanilla, [0.20, 0.25, 0.22, 0.18, 0.21])],  # ahead in every seed
        "hybrid": [v + d for v, d in zip(vanilla, [0.003, -0.002, 0.001, -0.001, 0.002])],  # within 0.01
        "best_of_n": [v + d for v, d in zip(vanilla, [0.3, -0.4, 0.2, -0.1, 0.05])],  # all over the place
    }
    for sampler, values in finals.items():
        for seed, final in enumerate(values):
            write_run(tmp_path / sampler / str(seed), sampler, seed, final)
    table = per_seed(tmp_path, "final")
    assert table.loc[2, "pilaf"] == 0.72
    words = {name: d.word for name, d in decisions(table, margin=0.05).items()}
    assert words == {"pilaf": "better", "hybrid": "equivalent", "best_of_n": "underpowered"}
    text = primary_table(tmp_path, "final", 0.05)
    assert "underpowered (MDE" in text and "equivalent within ±0.050" in text and "better: +0.212" in text
    assert text.splitlines()[2].startswith("| vanilla | 0.600 [")  # the baseline first, no comparison


def test_only_pilafs_row_is_the_claims_test_the_others_are_holm_corrected(tmp_path):
    """Two samplers each just better than vanilla on their own (paired p 0.028 and 0.049) are not after
    Holm over the two (0.056); PILAF's row (p 0.027), the claim's one primary test, is not adjusted."""
    vanilla = [0.60, 0.70, 0.50, 0.65, 0.55]
    ahead = {
        "pilaf": [0.05, 0.01, 0.08, 0.02, 0.06],
        "hybrid": [0.05, 0.02, 0.08, 0.01, 0.07],
        "best_of_n": [0.06, 0.005, 0.07, 0.01, 0.09],
    }
    for sampler, gains in {"vanilla": [0.0] * 5, **ahead}.items():
        for seed, (v, gain) in enumerate(zip(vanilla, gains)):
            write_run(tmp_path / sampler / str(seed), sampler, seed, v + gain)
    words = {name: d.word for name, d in decisions(per_seed(tmp_path, "final"), margin=0.01).items()}
    assert words == {"pilaf": "better", "hybrid": "better", "best_of_n": "better"}  # each alone
    rows = {line.split("|")[1].strip(): line for line in primary_table(tmp_path, "final", 0.01).splitlines()[2:]}
    assert "better: +0.044" in rows["pilaf"] and "secondary" not in rows["pilaf"]
    for sampler in ("hybrid", "best_of_n"):
        assert "better" not in rows[sampler] and "(secondary, Holm over 2)" in rows[sampler]
