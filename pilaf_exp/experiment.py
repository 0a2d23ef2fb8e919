"""Builds an experiment's parts from the config and runs it: run(cfg) -> summary."""

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
from transformers import AutoModelForCausalLM, PreTrainedModel

from pilaf_exp import outputs
from pilaf_exp.cache import load_or_build_model, load_or_compute_json
from pilaf_exp.checks import validate
from pilaf_exp.generation import POLICY, DecodeSpec, decode
from pilaf_exp.metrics import Evaluator, describe_policy
from pilaf_exp.optimum import optimum
from pilaf_exp.oracle import RewardOracle
from pilaf_exp.samplers import PairSampler
from pilaf_exp.sft import train_sft

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

    @property
    def output_dir(self) -> Path:
        return Path(self.cfg.output_dir)

    def base_spec(self) -> dict:
        """What fixes the reference and the oracle: the key of everything cached per task."""
        return resolved(self.cfg, "task", "model", "oracle")

    def new_policy(self) -> PreTrainedModel:
        """The initial policy: a trainable copy of the reference."""
        return self.trainable(copy.deepcopy(self.reference))

    def load_policy(self, path: Path) -> PreTrainedModel:
        return self.trainable(AutoModelForCausalLM.from_pretrained(path))

    @staticmethod
    def trainable(policy: PreTrainedModel) -> PreTrainedModel:
        policy.requires_grad_(True)
        return policy.train()

    def evaluator(self, spec: DecodeSpec, beta: float) -> Evaluator:
        prompts, ev = self.task.test_prompts, self.cfg.eval
        return Evaluator(prompts, self.task.mask_of(prompts), spec, beta, int(ev.seed), int(ev.batch_size))

    def trainer(self, **kwargs) -> L.Trainer:
        return instantiate(self.cfg.trainer)(logger=self.loggers, **kwargs)


def resolved(cfg: DictConfig, *keys: str) -> dict:
    return {key: OmegaConf.to_container(cfg[key], resolve=True) for key in keys}


def build_reference(cfg: DictConfig, task: Any) -> PreTrainedModel:
    """The SFT model (reference and initial policy), from the on-disk cache when it exists."""
    sft = cfg.model.sft

    def build() -> PreTrainedModel:
        count = sft.get("demonstrations") or sft.steps * sft.batch_size
        demos = task.demonstrations(count, torch.Generator().manual_seed(sft.seed))
        with torch.random.fork_rng():
            L.seed_everything(sft.seed, verbose=False)
            policy = instantiate(cfg.model.policy)
            return train_sft(policy, demos, task.prompt_length, sft.lr, sft.batch_size, sft.steps, sft.seed)

    return load_or_build_model(Path(cfg.cache_dir) / "sft", resolved(cfg, "task", "model"), build)


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


def exact_optimum(exp: Experiment) -> dict[str, float]:
    """J* and J(pi_ref) by enumeration on the first `eval.optimum_prompts` test prompts (cached)."""
    count = int(exp.cfg.eval.optimum_prompts)
    if count <= 0 or not getattr(exp.task, "enumerable", False):
        return {}
    beta = float(exp.cfg.algo.beta)
    spec = {"stage": "optimum", "base": exp.base_spec(), "beta": beta, "prompts": count}
    prompts = exp.task.test_prompts[:count]
    task = exp.task
    return load_or_compute_json(
        Path(exp.cfg.cache_dir) / "optimum",
        spec,
        lambda: optimum(exp.reference, exp.oracle, prompts, task.vocab_size, task.response_length, beta),
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
    optimum_started = time.perf_counter()
    fixed = exact_optimum(exp)
    optimum_seconds = time.perf_counter() - optimum_started
    fixed |= describe_policy(exp.reference, exp.task, algo.temperature)
    for logger in exp.loggers:
        logger.log_metrics(fixed, step=0)
    fitted = algo.fit(exp)
    wall = time.perf_counter() - started

    history = fitted.record.history
    summary = {
        "algo": algo.name,
        "sampler": exp.sampler.name,
        "seed": exp.seed,
        "experiment": cfg.get("experiment_name") or algo.name,
        "steps": history[-1]["step"],
        **{k: v for k, v in history[-1].items() if k != "step"},
        **{f"sft/{k.split('/')[1]}": history[0][k] for k in ("eval/reward", "eval/kl", "eval/J")},
        **fixed,
        **fitted.record.notes,
    }
    seconds = fitted.record.stopwatch.seconds | {"optimum": optimum_seconds}
    timing = outputs.timing(seconds, wall, pairs=fitted.record.pairs_labelled)
    outputs.write_json(out_dir / "summary.json", summary)
    outputs.write_json(out_dir / "timing.json", timing)
    outputs.write_history(out_dir / "eval_history.csv", history)
    outputs.plot_reward_kl(history, out_dir / "reward_kl.png", title=f"{algo.name} DPO, {exp.sampler.name}")
    outputs.print_result(summary, timing, out_dir)
    for logger in exp.loggers:
        logger.finalize("success")
    return summary
