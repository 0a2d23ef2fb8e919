"""RESULTS.md's protocol section from the protocol file, and --only-write without runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pilaf_exp.results.__main__ import ROOT, check_sweep
from pilaf_exp.results.pilot import PROTOCOL, PROTOCOLS, load_protocol
from pilaf_exp.results.results_text import protocol_section


def test_the_protocol_section_states_the_rule_and_waits_for_the_chosen_values(tmp_path):
    protocol = load_protocol()
    unchosen = {key: value for key, value in protocol.items() if key != "chosen"}
    text = protocol_section(unchosen, PROTOCOL.relative_to(ROOT), tmp_path)
    assert "batch128" in text and "5% of J* - J(pi_ref)" in text and "docs/results/protocol.yaml" in text
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
    text = protocol_section(unchosen | {"chosen": chosen}, PROTOCOL.relative_to(ROOT), tmp_path)
    assert "**12 seeds** per sampler" in text and "| batch128 | 5 |" in text


def test_a_seed_cap_and_the_exact_prompts_rule_are_stated_with_what_they_cost(tmp_path):
    """Rules 6 and 7 (Fig. 4's protocol): fewer seeds than power asks for, and capped exact prompts."""
    protocol = {key: value for key, value in load_protocol().items() if key != "chosen"}
    protocol["rule"] |= {"max_seeds": 8, "max_exact_prompts": 48}
    chosen = {
        "candidate": "batch128",
        "endpoint": "area",
        "between_seed_sd": 0.2,
        "margin": 0.16,
        "seeds_per_sampler": 8,
        "seeds_needed": 21,
        "mde_at_chosen_seeds": 0.31,
        "mde_at_10_seeds": 0.27,
        "evaluation_error": {
            "median_standard_error": 0.09,
            "prompts": 16,
            "bound": 0.04,
            "prompts_for_bound": 81,
            "exact_prompts": 48,
            "exact_prompts_meet_bound": False,
        },
    }
    text = protocol_section(protocol | {"chosen": chosen}, PROTOCOL.relative_to(ROOT), tmp_path)
    assert "power asks for 21" in text and "caps the seeds at 8" in text and "MDE at these seeds is 0.31" in text
    assert "**48 prompts** exactly" in text and "the bound is not met" in text


def test_only_write_without_runs_is_an_error_and_leaves_results_md(tmp_path):
    """A claim with neither runs under --runs nor kept raw runs (--kept) cannot be written."""
    before = (ROOT / "RESULTS.md").read_text()
    kept = tmp_path / "kept"
    kept.mkdir()
    command = [sys.executable, "-m", "pilaf_exp.results", "--only-write", "--runs", str(tmp_path / "runs")]
    done = subprocess.run(
        [*command, "--kept", str(kept), "--sweeps", "table2_iterative"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 2 and "no finished claim sweep" in done.stderr
    assert (ROOT / "RESULTS.md").read_text() == before


def test_a_claim_sweep_must_carry_its_protocols_chosen_values():
    """`make results` checks each sweep file against its own protocol before any claim run."""
    path, _ = PROTOCOLS["fig4_overfitted"]
    protocol = load_protocol(path)
    check_sweep("fig4_overfitted", protocol)  # the committed sweep file carries them
    for changed in ({"seeds_per_sampler": 9}, {"overrides": protocol["chosen"]["overrides"] | {"algo.lr": 0.5}}):
        with pytest.raises(SystemExit) as stopped:
            check_sweep("fig4_overfitted", protocol | {"chosen": protocol["chosen"] | changed})
        assert stopped.value.code == 2
