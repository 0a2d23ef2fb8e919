"""`results.bursts` on synthetic per-step logs: it finds the largest KL rise and says whether gradient
spikes came with it."""

from __future__ import annotations

import pandas as pd

from pilaf_exp.results.bursts import describe, largest_rise, per_step
from pilaf_exp.results.results_text import bursts_section


def fake_run(tmp_path, spike_at: int | None):
    steps = list(range(0, 41))
    kl = [0.1 * s if s <= 30 else 3.0 + 0.5 * (s - 30) for s in steps]  # a burst over steps 31-40
    pd.DataFrame({"step": steps, "eval/kl": kl, "eval/J": [0.01 * s for s in steps], "eval/reward": kl}).to_csv(
        tmp_path / "eval_history.csv", index=False
    )
    norms = [0.2 + 0.001 * (s % 7) for s in steps[:-1]]  # ordinary, below 0.21
    if spike_at is not None:
        norms[spike_at - 1] = 0.9  # Lightning's row step k - 1 is step k's batch
    pd.DataFrame(
        {
            "step": steps[:-1],
            "train/loss": 0.69,
            "train/reward_margin": 0.01,
            "train/accuracy": 0.5,
            "train/grad_norm": norms,
        }
    ).to_csv(tmp_path / "metrics.csv", index=False)
    return tmp_path


def test_the_largest_rise_and_the_step_alignment(tmp_path):
    steps = per_step(fake_run(tmp_path, spike_at=35))
    assert largest_rise(steps, span=10) == (30, 40)
    assert steps.set_index("step").loc[35, "train/grad_norm"] == 0.9


def test_a_burst_on_ordinary_gradients_and_one_with_a_spike(tmp_path):
    calm, spiky = tmp_path / "calm", tmp_path / "spiky"
    calm.mkdir(), spiky.mkdir()
    quiet = describe(fake_run(calm, spike_at=None), span=10)
    assert "No step of the rise has a gradient norm above" in quiet and "| 40 |" in quiet
    loud = describe(fake_run(spiky, spike_at=35), span=10)
    assert "1 of 10 steps of the rise" in loud and "steps 35." in loud
    page = tmp_path / "bursts.md"
    page.write_text(loud)
    assert "steps 35." in bursts_section(page) and "| 40 |" not in bursts_section(page)
