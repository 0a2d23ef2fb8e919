"""Behaviour is pinned: a short run's summary.json is byte-identical to the one recorded in
tests/golden/, at one thread, on the torch and transformers versions it was recorded with (other
versions round differently: the test skips and says so). A change that is meant to alter results
re-records them on purpose:

    PILAF_RECORD_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden_summary.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import transformers

from pilaf_exp.run import run

GOLDEN = Path(__file__).parent / "golden"
VERSIONS = {"torch": torch.__version__, "transformers": transformers.__version__}
CASES = {  # name -> overrides on top of small_cfg's shrunk online run
    "online_vanilla": ["sampler=vanilla"],
    "online_pilaf": ["sampler=pilaf"],
    "online_best_of_n": ["sampler=best_of_n"],
}


@pytest.mark.parametrize("name", CASES)
def test_a_short_run_writes_the_recorded_summary(small_cfg, tmp_path, name):
    out = tmp_path / name
    run(small_cfg(*CASES[name], "threads=1", "eval.exact_prompts=2", "algo.eval_every=5", out=out))
    written = (out / "summary.json").read_text()
    golden = GOLDEN / f"{name}.json"
    if os.environ.get("PILAF_RECORD_GOLDEN"):
        golden.write_text(json.dumps({"versions": VERSIONS, "summary.json": written}, indent=1) + "\n")
    recorded = json.loads(golden.read_text())
    if recorded["versions"] != VERSIONS:
        pytest.skip(f"recorded with {recorded['versions']}, this is {VERSIONS}: floating-point rounding differs")
    assert written == recorded["summary.json"]
