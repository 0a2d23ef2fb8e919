"""The regime map (docs/results/protocol_regimes.yaml, `python -m pilaf_exp.results.regimes`): its decision
table, its cells' sweep files against the protocol, the predictions against the committed closed-form
tables, and the page's map rebuilt from the kept raw runs."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from pilaf_exp.infra.cli import compose_config
from pilaf_exp.results.regime_cells import agreement, load_cells
from pilaf_exp.results.regimes import PAGE, PROTOCOL, apply_holm, cell_dir, measure_cell, prepare
from pilaf_exp.results.regimes_page import cell_table

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL_DATA = yaml.safe_load(PROTOCOL.read_text())
CELLS = load_cells(PROTOCOL_DATA)


@pytest.mark.parametrize(
    ("prediction", "word", "expected"),
    [
        ("advantage", "better", "theory confirmed"),
        ("advantage", "equivalent", "advantage not shown (below the margin, if any)"),
        ("advantage", "underpowered", "advantage not shown (underpowered)"),
        ("advantage", "worse", "contradicts the theory"),
        ("tie", "equivalent", "theory confirmed (tie)"),
        ("tie", "underpowered", "undecided"),
        ("tie", "better", "contradicts the theory"),
        ("tie", "worse", "contradicts the theory"),
        ("", "better", "no prediction before the runs"),
    ],
)
def test_agreement_follows_the_protocols_decision_table(prediction, word, expected):
    assert agreement(prediction, word) == expected


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_each_cells_sweep_file_carries_the_cells_knobs(cell):
    cfg = compose_config(f"+sweep={cell.sweep}")
    assert cfg.algo.beta == cell.beta
    assert cfg.task.response_length == cell.response_length
    if cell.oracle == "policy_ratio":  # not calibrated: r* keeps the scale its noise gives (about cell.oracle_std)
        assert cfg.oracle.model._target_.endswith("perturbed_policy_reward")
        assert OmegaConf.select(cfg, "oracle.target_std") is None
    else:
        assert cfg.oracle.target_std == cell.oracle_std
    assert (cfg.model.sft.steps == 3000) == (cell.start == "overfitted")
    if not cell.kept:  # the new cells: Table 3's chosen settings, vanilla and PILAF on seeds 0-7
        table3 = compose_config("+sweep=table3_online")
        for key in ("algo.lr", "algo.batch_size", "algo.steps", "eval.exact_prompts", "eval.exact_every"):
            assert OmegaConf.select(cfg, key) == OmegaConf.select(table3, key), key
        params = OmegaConf.load(ROOT / "sweeps" / f"{cell.sweep}.yaml").hydra.sweeper.params
        assert params.sampler == "vanilla,pilaf"


@pytest.mark.parametrize("cell", [c for c in CELLS if c.prediction], ids=lambda c: c.name)
def test_each_prediction_is_the_committed_closed_form_tables(cell):
    """The protocol's gap at t = 0.75 is the tabular check's, and the word follows the threshold."""
    world = PROTOCOL_DATA["prediction"][cell.name]["world"]
    table = pd.read_csv(ROOT / "docs" / "results" / "regimes" / "predictions" / world / "tabular.csv")
    row = table[(table["beta"] == cell.beta) & (table["t"] == 0.75) & (table["off"] == 0.0)]
    gap = float(row["t_pilaf_half - vanilla predicted"].iloc[0])
    assert math.isclose(gap, cell.predicted_gap, rel_tol=0.05, abs_tol=1e-5)  # as rounded in the protocol
    threshold = PROTOCOL_DATA["prediction"]["threshold"]
    assert cell.prediction == ("advantage" if gap >= threshold else "tie")


@pytest.mark.skipif(not PAGE.exists(), reason="make regimes has not written docs/results/regimes.md")
def test_the_map_in_the_page_is_rebuilt_from_the_kept_runs(tmp_path):
    prepare(CELLS, tmp_path, jobs=1, only_write=True)
    done = [cell for cell in CELLS if (cell_dir(cell, tmp_path) / "done").exists()]
    results = [measure_cell(cell, cell_dir(cell, tmp_path), PROTOCOL_DATA["settings"]) for cell in done]
    apply_holm(results, PROTOCOL_DATA["decision"]["holm_over"])
    assert results, "no cell's runs are kept"
    assert cell_table(results) in PAGE.read_text()
