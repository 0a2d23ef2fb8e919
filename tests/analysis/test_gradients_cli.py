"""The gradient analysis end to end: the command line on a run's checkpoint and the SFT policy, the
report's table, figure and text, a checkpoint of another world refused, the verdict's rule."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

TINY_WORLD = [
    "task.vocab_size=3",
    "task.prompt_length=2",
    "task.response_length=3",
    "task.num_test_prompts=4",
    "model.policy.hidden_size=16",
    "model.policy.num_layers=1",
    "model.policy.num_heads=2",
    "model.sft.steps=4",
    "oracle.model.hidden_size=16",
    "oracle.model.num_layers=1",
    "oracle.model.num_heads=2",
    "oracle.calibration_prompts=32",
    "eval.exact_prompts=2",
    "algo.batch_size=4",
]


def fake_run(tmp_path, overrides: list[str], step: int) -> Path:
    """A run directory as `python -m pilaf_exp` leaves it: its resolved config and a Lightning checkpoint
    whose state_dict holds the policy under `policy.` (here the reference, nudged)."""
    from omegaconf import OmegaConf

    from pilaf_exp.build import build_world
    from pilaf_exp.infra.cli import compose_config

    cfg = compose_config(*overrides)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    policy = copy.deepcopy(build_world(cfg).reference)
    with torch.no_grad():
        policy.lm_head.weight.add_(torch.randn_like(policy.lm_head.weight, generator=torch.Generator().manual_seed(0)))
    state = {f"policy.{k}": v for k, v in policy.state_dict().items()}
    path = run / "checkpoints" / f"step_{step:08d}.ckpt"
    torch.save({"state_dict": state, "pilaf": {"run_step": step}}, path)
    return path


def test_command_line_analyses_a_run_checkpoint_and_the_report_writes_table_figure_and_text(tmp_path, sft_cache):
    from pilaf_exp.analysis import gradients, gradients_report

    overrides = [*TINY_WORLD, f"cache_dir={sft_cache}", "seed=3"]
    checkpoint = fake_run(tmp_path, overrides, step=7)
    out = tmp_path / "results"
    samplers = ["--samplers", "vanilla,hybrid", "--variant", "pilaf:sampler.coef=0.3", "--pairs-for", "hybrid=32"]
    gradients.main(
        [
            *overrides,
            "--pairs",
            "64",
            *samplers,
            "--checkpoint",
            str(checkpoint),
            "--checkpoint",
            "sft",
            "--out",
            str(out),
        ]
    )
    trained, sft = (
        json.loads((out / "run_step7_seed3.json").read_text()),
        json.loads((out / "sft_seed3.json").read_text()),
    )
    assert trained["step"] == 7 and trained["run_seed"] == 3 and sft["step"] == 0
    assert list(trained["samplers"]) == ["vanilla", "hybrid", "pilaf[coef=0.3]"]
    pilaf = {"_target_": "pilaf_exp.sampling.samplers.PilafSampler", "coef": 0.3, "interpolated_fraction": 0.5}
    assert trained["sampler_configs"]["pilaf[coef=0.3]"] == pilaf
    assert trained["objective"]["kl"] > 0 and sft["objective"]["kl"] == pytest.approx(0, abs=1e-6)
    for name, result in trained["samplers"].items():
        assert -1 <= result["cosine"] <= 1 and result["pairs"] == 2 * (32 if name == "hybrid" else 64) * 2
    written = gradients_report.write(out, tmp_path / "docs")
    assert all(path.exists() for path in written)
    text = (tmp_path / "docs" / "gradients.md").read_text()
    assert "| 7 | pilaf[coef=0.3] | 1 |" in text and "## Does it agree?" in text and "gradients/gradients.png" in text


def test_a_checkpoint_from_another_world_is_refused(tmp_path, sft_cache):
    from pilaf_exp.analysis import gradients

    checkpoint = fake_run(tmp_path, [*TINY_WORLD, f"cache_dir={sft_cache}"], step=1)
    with pytest.raises(SystemExit) as stop:
        gradients.main(
            [*TINY_WORLD, f"cache_dir={sft_cache}", "oracle.target_std=1.0", "--checkpoint", str(checkpoint)]
        )
    assert stop.value.code == 2


def summary_of(cosines: dict[str, list[float]], plain_offset: float = 0.0):
    """The report's summary of synthetic results: step 100, one value per seed (the plain cosine offset
    from the debiased one by `plain_offset`)."""
    from pilaf_exp.analysis.gradients_table import summarise

    rows = [
        {
            "step": 100,
            "seed": seed,
            "sampler": name,
            "cosine": value + plain_offset,
            "cosine_debiased": value,
            "gain_per_annotation": value,
            "snr": value,
            "cosine_mc_error": 0.0,
            "noise_share": 0.0,
        }
        for name, values in cosines.items()
        for seed, value in enumerate(values)
    ]
    return summarise(pd.DataFrame(rows))


def test_the_verdict_follows_the_paired_interval():
    from pilaf_exp.analysis.gradients_text import claim_verdict

    better = summary_of({"vanilla": [0.90, 0.91, 0.92, 0.90], "pilaf": [0.95, 0.95, 0.97, 0.96]})
    tie = summary_of({"vanilla": [0.90, 0.91, 0.92, 0.90], "pilaf": [0.95, 0.86, 0.97, 0.88]})
    worse = summary_of({"vanilla": [0.90, 0.91, 0.92, 0.90], "pilaf": [0.80, 0.81, 0.83, 0.80]})
    assert claim_verdict(better, "cosine", [100]).startswith("**agrees**")
    assert claim_verdict(tie, "cosine", [100]).startswith("**not resolved**")
    assert claim_verdict(worse, "cosine", [100]).startswith("**disagrees**")


def test_the_table_reads_the_debiased_cosine_and_holm_adjusts_each_family():
    from scipy import stats

    vanilla, pilaf, hybrid = [0.90, 0.91, 0.92, 0.90], [0.93, 0.93, 0.97, 0.92], [0.94, 0.92, 0.95, 0.93]
    summary = summary_of({"vanilla": vanilla, "pilaf": pilaf, "hybrid": hybrid})
    rows = summary.set_index("sampler")
    assert rows.loc["pilaf", "cosine"] == pytest.approx(sum(pilaf) / 4)
    # Holm over the family of two comparisons with vanilla: the smaller p doubled, the larger kept (or raised).
    raw = {name: stats.ttest_rel(values, vanilla).pvalue for name, values in (("pilaf", pilaf), ("hybrid", hybrid))}
    low, high = sorted(raw, key=raw.get)
    assert rows.loc[low, "cosine holm p"] == pytest.approx(min(1.0, 2 * raw[low]))
    assert rows.loc[high, "cosine holm p"] == pytest.approx(max(2 * raw[low], raw[high]))
    # The plain cosine is not what the table reads.
    plain = summary_of({"vanilla": vanilla, "pilaf": pilaf}, plain_offset=-0.5).set_index("sampler")
    assert plain.loc["pilaf", "cosine"] == pytest.approx(sum(pilaf) / 4)
