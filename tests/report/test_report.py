"""The report: rankings, the gain column, and tables rebuilt from real sweeps' own summaries."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pandas as pd
import pytest

from pilaf_exp.report.__main__ import main
from pilaf_exp.report.decide import minimum_detectable
from pilaf_exp.report.tables import formatted, summarise, write_report


def fake_runs() -> pd.DataFrame:
    rows = []
    for sampler, js, kls in [("vanilla", [1.0, 2.0], [3.0, 5.0]), ("pilaf", [3.0, 3.0], [5.0, 5.0])]:
        for seed, (j, kl) in enumerate(zip(js, kls)):
            rows.append(
                {
                    "sampler": sampler,
                    "seed": seed,
                    "eval/J": j,
                    "eval/kl": kl,
                    "eval/reward": j + 0.1 * kl,
                    "sft/J": 0.0,
                    "optimum/J_star": 5.0,
                    "optimum/J_ref": 1.0,
                }
            )
    return pd.DataFrame(rows)


def test_summary_statistics_gain_and_formatting():
    stats = summarise(fake_runs())
    assert list(stats.index) == ["vanilla", "pilaf"]  # the paper's order, not alphabetical
    assert stats.loc["vanilla", "J mean"] == 1.5
    assert stats.loc["vanilla", "J std"] == pytest.approx(statistics.stdev([1.0, 2.0]))
    # gain % = 100 (J - J_sft) / (J* - J_ref): vanilla (25% and 50%), pilaf 75%.
    assert stats.loc["vanilla", "gain % mean"] == pytest.approx(37.5)
    assert stats.loc["pilaf", "gain % mean"] == pytest.approx(75.0)
    # 95% t interval over 2 seeds: mean ± t_{0.975,1} sd / sqrt(2) = 1.5 ± 12.706 x 0.5 for vanilla's J.
    assert stats.loc["vanilla", "J ci low"] == pytest.approx(1.5 - 12.7062 * 0.5, abs=1e-3)
    cells = formatted(stats)
    # No cell is marked for its mean's rank: only a paired interval that excludes 0 marks a win.
    assert cells.loc["pilaf", "J"] == "3.000 [3.000, 3.000]"
    assert cells.loc["vanilla", "J"] == "1.500 [-4.853, 7.853]"
    assert cells.loc["vanilla", "KL"] == "4.000 [-8.706, 16.706]"
    assert stats.loc["vanilla", "seeds"] == 2
    # Pilaf - vanilla by seed: 3 - 1 = 2, 3 - 2 = 1: mean 1.5, the same interval as vanilla's J, which holds
    # 0; no exact optimum here, so no margin: underpowered, with the difference 2 seeds could detect.
    assert stats.loc["pilaf", "J diff mean"] == 1.5 and stats.loc["pilaf", "J diff pairs"] == 2
    mde = minimum_detectable(statistics.stdev([2.0, 1.0]), 2)
    assert cells.loc["pilaf", "ΔJ vs vanilla [95% CI]"] == f"underpowered (MDE {mde:.3f}): +1.500 [-4.853, +7.853]"
    assert cells.loc["vanilla", "ΔJ vs vanilla [95% CI]"] == "—"


def exact_run(run_dir, sampler: str, seed: int, slope: float) -> None:
    """A finished run on an enumerable task: exact J = 0.1 + slope x at steps 0, 20, 40 (x = annotations /
    400), sampled J = exact + 0.01 at every evaluation; summary.json with the exact and sampled finals."""
    run_dir.mkdir(parents=True)
    steps = [0, 10, 20, 30, 40]
    history = pd.DataFrame({"step": steps, "annotations/total": [10.0 * step for step in steps]})
    x = history["annotations/total"] / 400
    history["eval/J"] = 0.11 + slope * x
    history["eval/reward"], history["eval/kl"] = history["eval/J"] + 0.5, 5.0
    history["exact/J"] = (0.1 + slope * x).where(history["step"] % 20 == 0)
    history.to_csv(run_dir / "eval_history.csv", index=False)
    final = 0.1 + slope
    summary = {
        "algo": "online",
        "experiment": "exact",
        "sampler": sampler,
        "seed": seed,
        "steps": 40,
        "eval/J": final + 0.01,
        "eval/reward": final + 0.51,
        "eval/kl": 5.0,
        "sft/J": 0.11,
        "exact/J": final,
        "exact/reward": final + 0.5,
        "exact/kl": 5.0,
        "exact/gain": slope / 2.0,
        "optimum/J_star": 2.1,
        "optimum/J_ref": 0.1,
        "annotations/total": 400.0,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))


def test_report_with_exact_values_intervals_and_curves(tmp_path, capsys):
    root = tmp_path / "sweep"
    slopes = {"vanilla": [1.0, 1.2, 0.8], "pilaf": [1.3, 1.6, 1.1]}  # pilaf ahead by 0.3, 0.4, 0.3 on every seed
    for sampler, values in slopes.items():
        for seed, slope in enumerate(values):
            exact_run(root / f"{sampler}_{seed}", sampler, seed, slope)
    written = write_report(root, tmp_path / "out")
    out = tmp_path / "out"
    assert {p.name for p in written} >= {
        "exact_table.md",
        "exact_curves.md",
        "exact_curves.csv",
        "exact_curves_per_run.csv",
        "exact_efficiency.md",
    }
    table = pd.read_csv(out / "exact_table.csv", index_col="sampler")
    assert table.loc["pilaf", "J mean"] == pytest.approx(0.1 + 4.0 / 3)  # the exact J, not the sampled +0.01
    assert table.loc["pilaf", "gain % mean"] == pytest.approx(100 * 4.0 / 6)  # 100 x exact/gain
    # J differences 0.3, 0.4, 0.3: mean 1/3, sd 0.0577, interval 1/3 ± 4.303 x 0.0333 = [0.190, 0.477]: a win.
    assert table.loc["pilaf", "J diff ci low"] == pytest.approx(1 / 3 - 4.302653 * 0.1 / 3, abs=1e-6)
    markdown = (out / "exact_table.md").read_text()
    assert markdown.startswith("Final policy, exact (enumerated")
    pilaf = next(line for line in markdown.splitlines() if line.startswith("| pilaf |"))
    assert pilaf.split("|")[6].strip() == "**+0.333 [+0.190, +0.477] ▲**"
    curves = pd.read_csv(out / "exact_curves.csv")
    half = curves[(curves["metric"] == "J @ 50% budget") & (curves["sampler"] == "pilaf")].iloc[0]
    assert half["mean"] == pytest.approx(0.1 + 4.0 / 3 / 2)  # the exact line 0.1 + slope x at x = 1/2
    # Alone its paired t test rejects (p 0.0099), but Holm over the table's 6 tests does not: not "better".
    assert half["t p"] < 0.05 < half["holm p"] and half["verdict"] == "underpowered"
    assert not {"J AUC", "J @ 100% budget", "J last 10%"} & set(curves["metric"])
    # Vanilla's final exact gain G = mean slope = 1.0; pilaf seed 0's exact line 0.1 + 1.3 x reaches 0.1 + 0.25
    # at x = 0.25 / 1.3 (the sampled line, 0.01 above it, would cross earlier: one scale for both).
    per_run = pd.read_csv(out / "exact_curves_per_run.csv").set_index(["sampler", "seed"])
    assert per_run.loc[("pilaf", 0), "annotations to 25% gain"] == pytest.approx(400 * 0.25 / 1.3)
    printed = capsys.readouterr().out
    assert (out / "exact_curves.md").read_text() in printed and markdown in printed
    tex = (out / "exact_table.tex").read_text()
    assert r"\textbf{+0.333 [+0.190, +0.477] $\blacktriangle$}" in tex and r"$\Delta$J vs vanilla" in tex


def test_no_runs_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: no runs (summary.json) found under {tmp_path}"


@pytest.mark.slow
def test_table3_sweep_at_two_seeds_and_its_report(tmp_path, subprocess_env):
    """The paper's Table 3 sweep on the embedded default (4 samplers x 2 seeds, local multirun),
    then the report: its table must agree with the runs' own summaries."""
    sweep_dir = tmp_path / "table3"
    sweep = subprocess.run(
        [
            sys.executable,
            "-m",
            "pilaf_exp",
            "-m",
            "+sweep=table3_online",
            "seed=0,1",
            "eval.exact_prompts=16",  # the protocol's 48 triple each run's exact walks: too slow for CI
            "logger=csv",
            "trainer.enable_progress_bar=false",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")]
    assert sorted((s["sampler"], s["seed"]) for s in summaries) == sorted(
        (sampler, seed) for sampler in ("vanilla", "best_of_n", "hybrid", "pilaf") for seed in (0, 1)
    )
    assert all(s["steps"] == 150 and s["experiment"] == "table3_online" for s in summaries)  # the protocol's

    report = subprocess.run([sys.executable, "-m", "pilaf_exp.report", str(sweep_dir)], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    out = sweep_dir / "report"
    table = pd.read_csv(out / "table3_online_table.csv", index_col="sampler")
    source = "exact" if all("exact/J" in s for s in summaries) else "eval"  # the table reads exact J where known
    for sampler, row in table.iterrows():
        js = [s[f"{source}/J"] for s in summaries if s["sampler"] == sampler]
        assert row["J mean"] == pytest.approx(statistics.mean(js))
        assert row["J std"] == pytest.approx(statistics.stdev(js))
        assert row["seeds"] == 2
    markdown = (out / "table3_online_table.md").read_text()
    for row in table.itertuples():  # a win is marked only where the paired interval excludes 0
        line = next(line for line in markdown.splitlines() if line.startswith(f"| {row.Index} |"))
        assert ("▲" in line) == (row._asdict().get("J diff ci low", float("nan")) > 0)
    assert (out / "table3_online_curves.md").exists() and (out / "table3_online_curves.csv").exists()
    for name in ("reward_kl", "J_vs_annotations"):
        assert (out / f"table3_online_{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / f"table3_online_{name}.pdf").read_bytes()[:4] == b"%PDF"
