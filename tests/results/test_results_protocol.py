"""RESULTS.md's protocol section from the protocol file, and --only-write without runs."""

from __future__ import annotations

import subprocess
import sys

from pilaf_exp.results.__main__ import ROOT
from pilaf_exp.results.pilot import load_protocol
from pilaf_exp.results.results_text import protocol_section


def test_the_protocol_section_states_the_rule_and_waits_for_the_chosen_values(tmp_path):
    protocol = load_protocol()
    unchosen = {key: value for key, value in protocol.items() if key != "chosen"}
    text = protocol_section(unchosen, tmp_path)
    assert "batch128" in text and "5% of J* - J(pi_ref)" in text
    assert "no value is chosen and no claim was run" in text
    chosen = {
        "candidate": "batch128",
        "endpoint": "final",
        "between_seed_sd": 0.1,
        "margin": 0.16,
        "seeds_per_sampler": 12,
        "mde_at_10_seeds": 0.18,
    }
    (tmp_path / "pilot_stability.md").write_text("| candidate | seeds |\n|---|---|\n| batch128 | 5 |\n")
    text = protocol_section(unchosen | {"chosen": chosen}, tmp_path)
    assert "**12 seeds** per sampler" in text and "| batch128 | 5 |" in text


def test_only_write_without_runs_is_an_error_and_leaves_results_md(tmp_path):
    """A claim with neither runs under --runs nor kept raw runs (results/kept/) cannot be written."""
    before = (ROOT / "RESULTS.md").read_text()
    claim = "fig4_overfitted"  # no kept archive: the protocol has not run it
    assert not (ROOT / "results" / "kept" / f"{claim}.tar.xz").exists()
    done = subprocess.run(
        [sys.executable, "-m", "pilaf_exp.results", "--only-write", "--runs", str(tmp_path), "--sweeps", claim],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 2 and "no finished claim sweep" in done.stderr
    assert (ROOT / "RESULTS.md").read_text() == before
