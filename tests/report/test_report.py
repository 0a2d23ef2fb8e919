"""The report: rankings, the gain column, and tables rebuilt from real sweeps' own summaries."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pandas as pd
import pytest

from pilaf_exp.report.__main__ import main
from pilaf_exp.report.tables import formatted, ranks, summarise


def test_ranks_mark_best_and_second_with_kl_lower_is_better():
    means = pd.Series({"vanilla": 1.0, "best_of_n": 3.0, "hybrid": 2.0, "pilaf": 0.5})
    assert ranks(means, higher_is_better=True) == {"best_of_n": 0, "hybrid": 1}
    assert ranks(means, higher_is_better=False) == {"pilaf": 0, "vanilla": 1}


def fake_runs() -> pd.DataFrame:
    rows = []
    for sampler, js, kls in [("vanilla", [1.0, 2.0], [3.0, 5.0]), ("pilaf", [3.0, 3.0], [5.0, 5.0])]:
        for seed, (j, kl) in enumerate(zip(js, kls)):
            rows.append({"sampler": sampler, "seed": seed, "eval/J": j, "eval/kl": kl, "eval/reward": j + 0.1 * kl,
                         "sft/J": 0.0, "optimum/J_star": 5.0, "optimum/J_ref": 1.0})  # fmt: skip
    return pd.DataFrame(rows)


def test_summary_statistics_gain_and_formatting():
    stats = summarise(fake_runs())
    assert list(stats.index) == ["vanilla", "pilaf"]  # the paper's order, not alphabetical
    assert stats.loc["vanilla", "J mean"] == 1.5
    assert stats.loc["vanilla", "J std"] == pytest.approx(statistics.stdev([1.0, 2.0]))
    # gain % = 100 (J - J_sft) / (J* - J_ref): vanilla (25% and 50%), pilaf 75%.
    assert stats.loc["vanilla", "gain % mean"] == pytest.approx(37.5)
    assert stats.loc["pilaf", "gain % mean"] == pytest.approx(75.0)
    cells = formatted(stats, bold="**{}**", underline="<u>{}</u>")
    assert cells.loc["pilaf", "J"] == "**3.000 ± 0.000**"
    assert cells.loc["vanilla", "J"] == "<u>1.500 ± 0.707</u>"
    assert cells.loc["vanilla", "KL"] == "**4.000 ± 1.414**"  # lower KL is better
    assert cells.loc["pilaf", "KL"] == "<u>5.000 ± 0.000</u>"
    assert stats.loc["vanilla", "seeds"] == 2


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
        [sys.executable, "-m", "pilaf_exp", "-m", "+sweep=table3_online", "seed=0,1",
         "logger=csv", "trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep_dir}"],
        env=subprocess_env, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")]
    assert sorted((s["sampler"], s["seed"]) for s in summaries) == sorted(
        (sampler, seed) for sampler in ("vanilla", "best_of_n", "hybrid", "pilaf") for seed in (0, 1)
    )
    assert all(s["steps"] == 300 and s["experiment"] == "table3_online" for s in summaries)

    report = subprocess.run([sys.executable, "-m", "pilaf_exp.report", str(sweep_dir)], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    out = sweep_dir / "report"
    table = pd.read_csv(out / "table3_online_table.csv", index_col="sampler")
    for sampler, row in table.iterrows():
        js = [s["eval/J"] for s in summaries if s["sampler"] == sampler]
        assert row["J mean"] == pytest.approx(statistics.mean(js))
        assert row["J std"] == pytest.approx(statistics.stdev(js))
        assert row["seeds"] == 2
    best = table["J mean"].idxmax()
    markdown = (out / "table3_online_table.md").read_text()
    best_line = next(line for line in markdown.splitlines() if line.startswith(f"| {best} |"))
    assert best_line.split("|")[4].strip().startswith("**")  # the J column of the best sampler is bold
    for name in ("reward_kl", "J_vs_annotations"):
        assert (out / f"table3_online_{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / f"table3_online_{name}.pdf").read_bytes()[:4] == b"%PDF"
