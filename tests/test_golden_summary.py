"""Behaviour is pinned: a short run's summary.json is byte-identical to the one recorded in tests/golden/
on the same torch and transformers versions (requirements.lock) and the same CPU kernel family (torch's
CPU capability: AVX2, AVX512, ...). On another machine the kernels round differently, so there every
number must match to a relative 1e-6 and everything else exactly: rounding moves a short run's numbers
by about 1e-7, a change of behaviour by far more. The test never skips. A change that is meant to alter
results re-records them on purpose:

    PILAF_RECORD_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden_summary.py
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import transformers

from pilaf_exp.run import run

GOLDEN = Path(__file__).parent / "golden"
MACHINE = {
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
}
CASES = {  # name -> overrides on top of small_cfg's shrunk online run
    "online_vanilla": ["sampler=vanilla"],
    "online_pilaf": ["sampler=pilaf"],
    "online_best_of_n": ["sampler=best_of_n"],
}
RELATIVE = 1e-6


def same_up_to_rounding(written: object, recorded: object, where: str = "") -> list[str]:
    """Where two JSON values differ by more than float rounding (every number to RELATIVE, the rest exactly)."""
    if isinstance(recorded, dict) and isinstance(written, dict):
        if written.keys() != recorded.keys():
            return [f"{where}: keys {sorted(written)} != {sorted(recorded)}"]
        return [d for key in recorded for d in same_up_to_rounding(written[key], recorded[key], f"{where}/{key}")]
    if isinstance(recorded, list) and isinstance(written, list) and len(written) == len(recorded):
        pairs = enumerate(zip(written, recorded))
        return [d for i, (w, r) in pairs for d in same_up_to_rounding(w, r, f"{where}[{i}]")]
    numbers = (int, float)
    if isinstance(recorded, numbers) and isinstance(written, numbers) and not isinstance(recorded, bool):
        close = math.isclose(written, recorded, rel_tol=RELATIVE, abs_tol=1e-12)
        return [] if close else [f"{where}: {written} != {recorded}"]
    return [] if written == recorded else [f"{where}: {written!r} != {recorded!r}"]


def test_the_comparison_tells_rounding_from_a_change():
    recorded = {"eval/J": 0.5944197293436446, "steps": 10, "sampler": "pilaf"}
    assert same_up_to_rounding({"eval/J": 0.5944196999655105, "steps": 10, "sampler": "pilaf"}, recorded) == []
    assert same_up_to_rounding({"eval/J": 0.5954197293436446, "steps": 10, "sampler": "pilaf"}, recorded)
    assert same_up_to_rounding({"eval/J": 0.5944197293436446, "steps": 11, "sampler": "pilaf"}, recorded)
    assert same_up_to_rounding({"eval/J": 0.5944197293436446, "steps": 10}, recorded)


@pytest.mark.parametrize("name", CASES)
def test_a_short_run_writes_the_recorded_summary(small_cfg, tmp_path, name):
    out = tmp_path / name
    run(small_cfg(*CASES[name], "threads=1", "eval.exact_prompts=2", "algo.eval_every=5", out=out))
    written = (out / "summary.json").read_text()
    golden = GOLDEN / f"{name}.json"
    if os.environ.get("PILAF_RECORD_GOLDEN"):
        golden.write_text(json.dumps({"machine": MACHINE, "summary.json": written}, indent=1) + "\n")
    recorded = json.loads(golden.read_text())
    if recorded["machine"] == MACHINE:
        assert written == recorded["summary.json"]
    else:  # other kernels: rounding differs, behaviour must not
        assert same_up_to_rounding(json.loads(written), json.loads(recorded["summary.json"])) == []
