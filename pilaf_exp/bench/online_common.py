"""What both sides of `bench.online_step` are built from: the package's real config resized to the
benchmark's shapes, the parts it builds, and the per-run result record."""

from __future__ import annotations

import argparse
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import lightning as L
import torch
from omegaconf import DictConfig
from torch import nn

from pilaf_exp import build
from pilaf_exp.build import Parts, build_parts
from pilaf_exp.config_checks import problems
from pilaf_exp.infra.cli import compose_config
from pilaf_exp.infra.errors import ConfigError

# The benchmark's shape breaks the task/model contract on purpose: its models see VOCAB ids (as in
# the TRL comparison's tiny Llama) while the embedded task draws prompts from a smaller alphabet
# (it lists them all). It is timed, never evaluated exactly, so the contract's one check is off here.
CONTRACT = "the policy has"  # the first words of the vocabulary line of data.task.model_mismatch

VOCAB = 64  # policy vocabulary, as in the TRL comparison's tiny Llama; the reward model adds one padding id
MAX_PROMPTS = 2**18  # the embedded task lists every prompt: keep that list small
NO_EVAL = 10**9  # eval_every: no evaluation between the first and the last step


@dataclass
class Result:
    method: str  # "pilaf_exp vanilla", "pilaf_exp pilaf", "TRL"
    new_tokens: int
    batch: int
    seconds: list[float]  # per timed step
    losses: list[float]  # DPO loss per timed step
    margins: list[float]  # mean implicit-reward margin (chosen - rejected) per timed step
    response_tokens: float  # mean tokens per sampled response over the timed steps
    weight_change: float  # L2 norm of (final - initial) policy weights
    phases: dict[str, float] = field(default_factory=dict)  # median seconds per step of named parts

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def pairs_per_second(self) -> float:
        return self.batch / self.median


def prompt_alphabet(prompt_length: int) -> int:
    """Tokens the embedded task draws prompts from: it enumerates alphabet**length prompts."""
    alphabet = VOCAB
    while alphabet > 2 and alphabet**prompt_length > MAX_PROMPTS:
        alphabet -= 1
    return alphabet


def bench_config(args: argparse.Namespace, sampler: str, new_tokens: int, out_dir: Path) -> DictConfig:
    """The package's real config, resized to the benchmark's shapes."""
    positions = args.prompt_length + new_tokens
    overrides = [
        f"sampler={sampler}",
        "logger=csv",  # no W&B
        f"output_dir={out_dir}",
        f"cache_dir={os.environ.get('PILAF_CACHE_DIR', '/tmp/pilaf_bench_cache')}",
        f"seed={args.seed}",
        # Prompts from a smaller alphabet when needed (the task lists them all); the models see 64 ids.
        f"task.vocab_size={prompt_alphabet(args.prompt_length)}",
        f"task.prompt_length={args.prompt_length}",
        f"task.response_length={new_tokens}",
        "task.num_test_prompts=16",  # the (untimed) evaluations at the first and last step stay short
        f"model.policy.vocab_size={VOCAB}",
        f"model.policy.hidden_size={args.hidden}",
        f"model.policy.num_layers={args.layers}",
        f"model.policy.max_positions={positions}",
        f"oracle.model.vocab_size={VOCAB}",
        f"oracle.model.max_positions={positions}",
        "oracle.calibration_prompts=256",
        "model.sft.steps=0",  # the seeded initial weights are the reference: no SFT before the benchmark
        f"algo.batch_size={args.batch}",
        f"algo.steps={args.warmup + args.steps}",
        f"algo.eval_every={NO_EVAL}",
        "eval.exact_prompts=0",
        "checkpoint.every_n_steps=null",
        "trainer.enable_progress_bar=false",
    ]
    cfg = compose_config(*overrides)
    found = [line for line in problems(cfg) if not line.startswith(CONTRACT)]
    if found:
        raise ConfigError("\n".join(found))
    return cfg


def build_experiment(cfg: DictConfig, callbacks: list[L.Callback] | None = None) -> Parts:
    L.seed_everything(int(cfg.seed), verbose=False)  # as pilaf_exp.run does before building
    with mock.patch.object(build, "model_mismatch", lambda *shape: None):  # see CONTRACT
        return build_parts(cfg, callbacks or [])


def weight_change(policy: nn.Module, initial: nn.Module) -> float:
    after = torch.cat([p.detach().flatten() for p in policy.parameters()])
    before = torch.cat([p.detach().flatten() for p in initial.parameters()])
    return (after - before).norm().item()
