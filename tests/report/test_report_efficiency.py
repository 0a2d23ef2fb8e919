"""Annotation efficiency: annotations each sampler needs to reach vanilla's final J, on synthetic
histories (no training), and through the report CLI on a synthetic tree of run directories."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pilaf_exp.report.efficiency import annotation_efficiency, annotations_to_reach

STEPS = [0, 10, 20, 30, 40]
ANNOTATIONS = [0.0, 100.0, 200.0, 300.0, 400.0]  # evaluations every 100 annotations

# sampler -> per-seed J at each evaluation. Vanilla ends at 1.0 and 2.0: target = 1.5.
CURVES = {
    "vanilla": [
        [0.0, 0.25, 0.5, 0.75, 1.0],  # never reaches its own mean final J
        [0.0, 0.5, 1.0, 1.5, 2.0],  # exactly on it at the 4th evaluation: 300
    ],
    "best_of_n": [
        [0.0, 0.2, 0.8, 1.4, 1.4],  # never
        [0.0, 1.6, 1.0, 1.0, 1.0],  # first crossing 0 -> 1.6 at 1.5/1.6 of 100 = 93.75, then falls back
    ],
    "hybrid": [[0.0, 0.1, 0.2, 0.3, 0.4], [0.0, 0.1, 0.2, 0.3, 1.49]],  # never (1.49 < 1.5)
    "pilaf": [
        [0.0, 1.0, 2.0, 3.0, 4.0],  # J = annotations / 100: crosses at 150
        [0.0, 0.6, 1.2, 1.8, 2.4],  # between 200 (1.2) and 300 (1.8), halfway: 250
    ],
}
EXPECTED = {  # (sampler, seed) -> annotations to reach 1.5
    ("vanilla", 0): math.nan,
    ("vanilla", 1): 300.0,
    ("best_of_n", 0): math.nan,
    ("best_of_n", 1): 93.75,
    ("hybrid", 0): math.nan,
    ("hybrid", 1): math.nan,
    ("pilaf", 0): 150.0,
    ("pilaf", 1): 250.0,
}


def history_of(sampler: str, seed: int, js: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {"step": STEPS, "eval/J": js, "annotations/total": ANNOTATIONS, "eval/reward": js, "eval/kl": 0.0}
    ).assign(sampler=sampler, seed=seed)


def histories(curves: dict[str, list[list[float]]] = CURVES) -> pd.DataFrame:
    frames = [history_of(sampler, seed, js) for sampler, runs in curves.items() for seed, js in enumerate(runs)]
    return pd.concat(frames, ignore_index=True)


def test_annotations_to_reach_interpolates_between_evaluations():
    run = history_of("pilaf", 0, [0.0, 0.6, 1.2, 1.8, 2.4])
    assert annotations_to_reach(run, 1.5) == pytest.approx(250.0)
    assert annotations_to_reach(run, 1.2) == pytest.approx(200.0)  # on an evaluation: that evaluation's count
    assert annotations_to_reach(run, 0.3) == pytest.approx(50.0)
    assert annotations_to_reach(run, -1.0) == 0.0  # there from the start
    assert math.isnan(annotations_to_reach(run, 2.5))  # never
    shuffled = run.sample(frac=1.0, random_state=0)  # rows out of order: sorted by step first
    assert annotations_to_reach(shuffled, 1.5) == pytest.approx(250.0)


def test_per_seed_counts_and_target():
    efficiency = annotation_efficiency(histories())
    assert efficiency.target == pytest.approx(1.5)  # mean of vanilla's final J (1.0, 2.0)
    got = {(r.sampler, r.seed): r.annotations for r in efficiency.per_seed.itertuples()}
    assert got.keys() == EXPECTED.keys()
    for key, expected in EXPECTED.items():
        assert got[key] == pytest.approx(expected, nan_ok=True), key
    assert efficiency.per_seed.set_index(["sampler", "seed"]).loc[("hybrid", 1), "final J"] == pytest.approx(1.49)


def test_per_sampler_mean_spread_reached_and_ratio_to_vanilla():
    summary = annotation_efficiency(histories()).summary
    pilaf, vanilla, best, hybrid = (summary.loc[s] for s in ("pilaf", "vanilla", "best_of_n", "hybrid"))
    # pilaf: both seeds (150, 250).
    assert pilaf["annotations mean"] == pytest.approx(200.0)
    assert pilaf["annotations std"] == pytest.approx(statistics.stdev([150.0, 250.0]))
    assert (pilaf["reached"], pilaf["seeds"]) == (2, 2)
    # The ratio pairs seeds where both reached: seed 1 only (250 vs vanilla's 300), not 200 / 300 over
    # different seeds.
    assert (pilaf["ratio"], pilaf["paired"]) == (pytest.approx(250.0 / 300.0), 1)
    assert pilaf["saved %"] == pytest.approx(100 / 6)
    # vanilla reaches its own mean final J in one seed of two; its mean is that seed's 300.
    assert (vanilla["annotations mean"], vanilla["reached"], vanilla["seeds"]) == (300.0, 1, 2)
    assert math.isnan(vanilla["annotations std"])  # one seed reached: no spread
    assert (vanilla["ratio"], vanilla["saved %"]) == (1.0, 0.0)
    # best_of_n: one seed, at its first crossing although its final J is below the target.
    assert (best["annotations mean"], best["reached"]) == (93.75, 1)
    assert best["saved %"] == pytest.approx(68.75)
    # hybrid never: no mean, no ratio, 0 of 2.
    assert (hybrid["reached"], hybrid["seeds"]) == (0, 2)
    assert math.isnan(hybrid["annotations mean"]) and math.isnan(hybrid["ratio"])
    assert (summary["budget"] == 400.0).all() and (summary["target J"] == 1.5).all()


def test_vanilla_seeds_with_equal_final_j_all_reach_their_mean():
    # Three seeds all ending at J = 0.1 average to 0.1 + 1.4e-17 in floating point: all must reach it.
    curves = {"vanilla": [[0.0, 0.02, 0.05, 0.08, 0.1]] * 3}
    assert pd.Series([0.1] * 3).mean() > 0.1  # the premise
    summary = annotation_efficiency(histories(curves)).summary
    assert (summary.loc["vanilla", "reached"], summary.loc["vanilla", "annotations mean"]) == (3, 400.0)


def test_no_vanilla_runs_no_table():
    assert annotation_efficiency(histories({"pilaf": CURVES["pilaf"]})) is None
    assert annotation_efficiency(pd.DataFrame()) is None


def write_run(run_dir: Path, experiment: str, sampler: str, seed: int, js: list[float]) -> None:
    """What a finished run leaves that the report reads: summary.json (final evaluation) and eval_history.csv."""
    run_dir.mkdir(parents=True)
    history = history_of(sampler, seed, js).drop(columns=["sampler", "seed"])
    history.to_csv(run_dir / "eval_history.csv", index=False)
    final = history.iloc[-1]
    summary = {
        "algo": "online",
        "experiment": experiment,
        "sampler": sampler,
        "seed": seed,
        "steps": STEPS[-1],
        "eval/J": final["eval/J"],
        "eval/reward": final["eval/reward"],
        "eval/kl": final["eval/kl"],
        "annotations/total": final["annotations/total"],
        "sft/J": js[0],
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))


def test_report_cli_writes_and_prints_the_efficiency_table(tmp_path):
    root = tmp_path / "multirun"
    job = 0
    for sampler, runs in CURVES.items():
        for seed, js in enumerate(runs):
            write_run(root / "table3" / str(job), "table3_online", sampler, seed, js)
            job += 1
    write_run(root / "solo" / "0", "solo", "pilaf", 0, CURVES["pilaf"][0])  # a group without vanilla

    report = subprocess.run([sys.executable, "-m", "pilaf_exp.report", str(root)], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    out = root / "report"
    table = pd.read_csv(out / "table3_online_efficiency.csv", index_col="sampler")
    assert list(table.index) == ["vanilla", "best_of_n", "hybrid", "pilaf"]  # the paper's order
    assert table.loc["pilaf", "annotations mean"] == pytest.approx(200.0)
    assert table.loc["pilaf", "annotations std"] == pytest.approx(statistics.stdev([150.0, 250.0]))
    assert table.loc["pilaf", "saved %"] == pytest.approx(100 / 6)  # paired on seed 1: 250 vs 300
    assert table["reached"].to_dict() == {"vanilla": 1, "best_of_n": 1, "hybrid": 0, "pilaf": 2}
    assert table["seeds"].tolist() == [2, 2, 2, 2]
    assert table.loc["best_of_n", "annotations mean"] == pytest.approx(93.75)

    markdown = (out / "table3_online_efficiency.md").read_text()
    assert "mean over its 2 seeds = 1.500" in markdown
    rows = {line.split("|")[1].strip(): line for line in markdown.splitlines() if line.startswith("| ")}
    assert rows["pilaf"] == "| pilaf | 200 ± 71 | 2/2 | 0.83x (1 seed) | 16.7 | 400 | s0 150 · s1 250 |"
    assert rows["vanilla"] == "| vanilla | 300 | 1/2 | 1.00x (1 seed) | 0.0 | 400 | s0 — · s1 300 |"
    assert rows["hybrid"] == "| hybrid | — | 0/2 | — | — | 400 | s0 — · s1 — |"
    assert markdown in report.stdout  # printed as well as written
    assert not (out / "solo_efficiency.csv").exists()  # no vanilla, no target: no table, no error
    assert (out / "solo_table.csv").exists()
