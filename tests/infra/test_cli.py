"""The command line: the default run through Hydra, W&B offline output, and bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SHRINK = ["algo.steps=6", "algo.batch_size=8", "algo.eval_every=3", "task.num_test_prompts=32", "eval.exact_prompts=2"]


def pilaf_exp(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pilaf_exp", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_cli_run_writes_hydra_outputs_and_an_offline_wandb_run(tmp_path, subprocess_env):
    run_dir = tmp_path / "run"
    result = pilaf_exp(["sampler=pilaf", "algo=online", *SHRINK, f"hydra.run.dir={run_dir}"], subprocess_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "eval/J" not in result.stderr
    for word in ("reward", "KL", "J", "sampling", "labelling", "training", "evaluation"):
        assert word in result.stdout
    assert (run_dir / ".hydra" / "config.yaml").exists() and (run_dir / "config_resolved.yaml").exists()
    assert (run_dir / "summary.json").exists() and (run_dir / "metrics.csv").exists()
    # A real offline W&B run that `wandb sync` can upload later.
    runs = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0


BAD_INPUTS = [
    (["sampler=nope"], ["sampler=nope", "best_of_n", "hybrid", "pilaf", "vanilla"]),
    (["algo.beta=-0.1"], ["algo.beta=-0.1", "> 0"]),
    (["sampler=best_of_n", "sampler.n=1"], ["sampler.n=1", ">= 2"]),
    (["algo.batch_size=0"], ["algo.batch_size=0", "> 0"]),
    (["oracle/labeler=coin"], ["oracle/labeler=coin", "argmax", "bradley_terry"]),
    (["task=hh_rlhf"], ["text", "tokenizer", "model=small"]),
    (["model=small"], ["task=embedded", "model=tiny"]),
    (["algo.micro_batch_size=5"], ["algo.micro_batch_size=5", "divide", "algo.batch_size=64"]),
    (["trainer=fsdp_cpu", "model.generation.engine=stacked"], ["engine='stacked'", "auto", "transformers"]),
    (["model.generation.batch_size=0"], ["model.generation.batch_size=0", "> 0"]),
    (["resume=maybe"], ["resume='maybe'", "auto or never"]),
    (["checkpoint.every_n_steps=0"], ["checkpoint.every_n_steps=0", "> 0"]),
]


def test_each_problem_gets_its_own_line(tmp_path, subprocess_env):
    result = pilaf_exp(
        ["algo.beta=-1", "seed=-3", "checkpoint.keep=0", f"hydra.run.dir={tmp_path / 'run'}"], subprocess_env, tmp_path
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines), result.stderr
    assert {"seed=-3", "algo.beta=-1", "checkpoint.keep=0"} == {line.split()[1] for line in lines}


@pytest.mark.parametrize(("args", "words"), BAD_INPUTS, ids=[a[0] for a, _ in BAD_INPUTS])
def test_bad_input_gives_one_clear_line_and_keeps_existing_outputs(tmp_path, subprocess_env, args, words):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text('{"kept": true}\n')  # an earlier run's result
    result = pilaf_exp([*args, f"hydra.run.dir={run_dir}"], subprocess_env, tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert (run_dir / "summary.json").read_text() == '{"kept": true}\n'


def test_refuses_to_overwrite_a_finished_run(tmp_path, subprocess_env):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text("{}\n")
    result = pilaf_exp([*SHRINK, f"hydra.run.dir={run_dir}"], subprocess_env, tmp_path)
    assert result.returncode == 2 and "already holds a finished run" in result.stderr
    assert (run_dir / "summary.json").read_text() == "{}\n"


def test_samplers_are_ordered_baseline_first_variants_after_their_base_others_last():
    from pilaf_exp.infra.cli import BASELINE_SAMPLER, sampler_names, sampler_order

    known = sampler_names()
    assert known[0] == BASELINE_SAMPLER and sorted(known[1:]) == known[1:]
    names = ["zeta", "pilaf[coef=0.05]", *reversed(known), "alpha", "pilaf"]  # pilaf twice: listed once
    pilaf = known.index("pilaf")
    expected = [*known[: pilaf + 1], "pilaf[coef=0.05]", *known[pilaf + 1 :], "alpha", "zeta"]
    assert sampler_order(names) == expected
