"""Iterative DPO: rounds of (label a dataset, train on it), with the paper's shared round 1."""

from __future__ import annotations

import datasets

ITERATIVE = ["algo=iterative"]  # shrunk by conftest: 2 rounds of 128 pairs, 16 per step


def test_iterative_runs_and_shares_one_vanilla_first_round(small_cfg, tmp_path, sft_cache):
    runs = {s: small_cfg(*ITERATIVE, f"sampler={s}", out=tmp_path / s) for s in ("vanilla", "pilaf")}
    from pilaf_exp.run import run

    summaries = {s: run(cfg) for s, cfg in runs.items()}
    pilaf, vanilla = summaries["pilaf"], summaries["vanilla"]
    # One cache entry, used by both samplers: byte-identical round-1 checkpoints.
    entries = [p for p in (sft_cache / "iteration_1").iterdir() if not p.name.startswith(".")]
    assert pilaf["round1/checkpoint_sha256"] == vanilla["round1/checkpoint_sha256"]
    assert {vanilla["round1/cached"], pilaf["round1/cached"]} == {False, True}
    assert len(entries) == 1

    for sampler, summary in summaries.items():
        assert summary["algo"] == "iterative" and summary["steps"] == 2 * 128 // 16
        assert summary["annotations/total"] == 2 * 2 * 128
        round1 = datasets.load_from_disk(str(tmp_path / sampler / "preferences" / "iteration_1"))
        round2 = datasets.load_from_disk(str(tmp_path / sampler / "preferences" / "iteration_2"))
        assert len(round1) == len(round2) == 128
        assert set(round1["source_a"]) == {"policy"}  # round 1 is vanilla for everyone
    pilaf_round2 = datasets.load_from_disk(str(tmp_path / "pilaf" / "preferences" / "iteration_2"))
    assert set(pilaf_round2["source_a"]) == {"policy", "plus"}
    # The rounds after the first differ by sampler.
    assert pilaf["eval/J"] != vanilla["eval/J"]


def test_without_the_protocol_switch_round_one_uses_the_sampler(small_cfg, tmp_path, sft_cache):
    from pilaf_exp.run import run

    summary = run(small_cfg(*ITERATIVE, "algo.vanilla_first_iteration=false", "sampler=hybrid", out=tmp_path / "h"))
    round1 = datasets.load_from_disk(str(tmp_path / "h" / "preferences" / "iteration_1"))
    assert set(round1["source_b"]) == {"reference"}
    assert "round1/checkpoint_sha256" not in summary


def test_round_one_sampler_is_the_configured_option_and_part_of_the_round_key():
    from hydra.utils import instantiate

    from pilaf_exp.infra.cache import cache_key
    from pilaf_exp.infra.cli import compose_config
    from pilaf_exp.sampling.samplers import HybridSampler, VanillaSampler

    default = compose_config("output_dir=/tmp/x", *ITERATIVE, "sampler=pilaf")
    algorithm = instantiate(default.algo)
    assert type(algorithm.first_round_sampler) is VanillaSampler  # conf/sampler/vanilla.yaml, whatever sampler= says
    # The key of the shared round is fixed by the settings, not by the objects' addresses.
    assert cache_key(algorithm.settings()) == cache_key(instantiate(default.algo).settings())
    hybrid = compose_config("output_dir=/tmp/x", *ITERATIVE, "sampler@algo.first_round_sampler=hybrid")
    other = instantiate(hybrid.algo)
    assert type(other.first_round_sampler) is HybridSampler
    assert cache_key(other.settings()) != cache_key(algorithm.settings())
