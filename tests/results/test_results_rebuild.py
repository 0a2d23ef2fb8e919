"""RESULTS.md's tables are what the kept raw runs give: every claim whose runs are kept in the
repository (results/kept/<claim>.tar.xz) is unpacked, its primary-endpoint table and the report's
final-policy table are rebuilt from the raw files, and each must appear in RESULTS.md as it is."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pilaf_exp.report.__main__ import main as report
from pilaf_exp.results.__main__ import CLAIMS
from pilaf_exp.results.keep import KEPT, unpack
from pilaf_exp.results.pilot import PROTOCOLS
from pilaf_exp.results.primary import primary_table

ROOT = Path(__file__).resolve().parents[2]
KEPT_CLAIMS = sorted(name for name in CLAIMS if (KEPT / f"{name}.tar.xz").exists())


def test_results_md_states_a_verdict_only_for_kept_claims():
    """A claim with a table in RESULTS.md has its raw runs kept (so the test below can rebuild it)."""
    text = (ROOT / "RESULTS.md").read_text()
    with_table = [name for name in CLAIMS if f"Sweep `{name}`" in text]
    assert with_table == [name for name in CLAIMS if name in KEPT_CLAIMS]
    assert KEPT_CLAIMS, "no claim's raw runs are kept in results/kept/"


@pytest.mark.parametrize("claim", KEPT_CLAIMS)
def test_the_tables_in_results_md_are_rebuilt_from_the_kept_runs(claim, tmp_path):
    (sweep,) = [path for path in unpack(KEPT, tmp_path) if path.name == claim]
    chosen = yaml.safe_load(PROTOCOLS[claim][0].read_text())["chosen"]  # the claim's own protocol
    text = (ROOT / "RESULTS.md").read_text()
    assert primary_table(sweep, chosen["endpoint"], chosen["margin"]) in text
    report([str(sweep), "--out", str(tmp_path / "report")])
    final_policy = (tmp_path / "report" / f"{claim}_table.md").read_text()
    assert final_policy in text
