"""Builds an experiment's parts from the config and runs it: run(cfg) -> final metrics."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel

from pilaf_exp import outputs
from pilaf_exp.checks import validate
from pilaf_exp.generation import POLICY, DecodeSpec, decode
from pilaf_exp.metrics import Evaluator
from pilaf_exp.oracle import RewardOracle
from pilaf_exp.samplers import PairSampler
from pilaf_exp.sft import load_or_build, train_sft

log = logging.getLogger(__name__)


@dataclass
class Experiment:
    cfg: DictConfig
    task: Any
    reference: PreTrainedModel
    oracle: RewardOracle
    sampler: PairSampler
    labeler: Any
    loggers: list

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    def new_policy(self) -> PreTrainedModel:
        """The initial policy: a trainable copy of the reference."""
        policy = copy.deepcopy(self.reference)
        policy.requires_grad_(True)
        return policy.train()

    def evaluator(self, spec: DecodeSpec, beta: float) -> Evaluator:
        prompts = self.task.test_prompts
        return Evaluator(
            prompts, self.task.mask_of(prompts), spec, beta, int(self.cfg.eval.seed), int(self.cfg.eval.batch_size)
        )

    def trainer(self, **kwargs) -> L.Trainer:
        return instantiate(self.cfg.trainer)(logger=self.loggers, **kwargs)


def build_reference(cfg: DictConfig, task: Any) -> PreTrainedModel:
    """The SFT model (reference and initial policy), from the on-disk cache when it exists."""
    sft = cfg.model.sft
    spec = OmegaConf.to_container(
        OmegaConf.create({"task": cfg.task, "policy": cfg.model.policy, "sft": sft}), resolve=True
    )

    def build() -> PreTrainedModel:
        demos = task.demonstrations(sft.steps * sft.batch_size, torch.Generator().manual_seed(sft.seed))
        with torch.random.fork_rng():
            L.seed_everything(sft.seed, verbose=False)
            return train_sft(instantiate(cfg.model.policy), demos, task.prompt_length, sft.lr, sft.batch_size, sft.seed)

    return load_or_build(Path(cfg.cache_dir) / "sft", spec, build)


def build_oracle(cfg: DictConfig, task: Any, reference: PreTrainedModel) -> RewardOracle:
    """The proxy oracle, calibrated to mean 0 / std `target_std` on pi_ref's train responses."""
    model = instantiate(cfg.oracle.model)
    oracle = RewardOracle(model, pad_token_id=model.config.pad_token_id).eval()
    generator = torch.Generator().manual_seed(cfg.task.seed)
    count = min(int(cfg.oracle.calibration_prompts), len(task.train_prompts))
    prompts = task.train_prompts[torch.randperm(len(task.train_prompts), generator=generator)[:count]]
    masks = task.mask_of(prompts)
    out = decode(reference, reference, prompts, masks, torch.full((count,), POLICY), task.decode_spec(1.0), generator)
    oracle.calibrate(oracle.raw_score(prompts, masks, out.tokens, out.mask), float(cfg.oracle.target_std))
    return oracle


def build(cfg: DictConfig) -> Experiment:
    task = instantiate(cfg.task)
    reference = build_reference(cfg, task)
    return Experiment(
        cfg=cfg,
        task=task,
        reference=reference,
        oracle=build_oracle(cfg, task, reference),
        sampler=instantiate(cfg.sampler),
        labeler=instantiate(cfg.oracle.labeler),
        loggers=[instantiate(node) for node in cfg.logger.values()] if cfg.get("logger") else [],
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment end to end; write its outputs to cfg.output_dir; return the summary."""
    validate(cfg)
    out_dir = Path(cfg.output_dir)
    outputs.claim_run_dir(out_dir)
    outputs.save_config(cfg, out_dir)
    L.seed_everything(cfg.seed, verbose=False)
    started = time.perf_counter()
    exp = build(cfg)
    algo = instantiate(cfg.algo)
    module = algo.fit(exp)
    wall = time.perf_counter() - started

    final = module.history[-1]
    summary = {
        "algo": algo.name,
        "sampler": exp.sampler.name,
        "seed": exp.seed,
        "steps": final["step"],
        **{k: v for k, v in final.items() if k != "step"},
        "sft/reward": module.history[0]["eval/reward"],
        "sft/kl": module.history[0]["eval/kl"],
        "sft/J": module.history[0]["eval/J"],
    }
    timing = outputs.timing(module.stopwatch.seconds, wall, pairs=len(module.preferences))
    outputs.write_json(out_dir / "summary.json", summary)
    outputs.write_json(out_dir / "timing.json", timing)
    outputs.write_history(out_dir / "eval_history.csv", module.history)
    module.preferences.save(out_dir / "preferences")
    outputs.plot_reward_kl(module.history, out_dir / "reward_kl.png", title=f"{algo.name} DPO, {exp.sampler.name}")
    outputs.print_result(summary, timing, out_dir)
    for logger in exp.loggers:
        logger.finalize("success")
    return summary
