"""Builds an experiment's parts from the config and runs it: run(cfg) -> summary."""

from __future__ import annotations

import copy
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForCausalLM, PreTrainedModel

from pilaf_exp import outputs
from pilaf_exp.cache import checkpoint_fingerprint, load_or_build_model, load_or_compute_json, weights_fingerprint
from pilaf_exp.checkpointing import Checkpointer
from pilaf_exp.checks import ConfigError, validate
from pilaf_exp.generation import POLICY, DecodeSpec, check_kv_budget, decode
from pilaf_exp.metrics import Evaluator, describe_policy
from pilaf_exp.optimum import optimum
from pilaf_exp.oracle import RewardOracle
from pilaf_exp.samplers import PairSampler
from pilaf_exp.sft import train_sft
from pilaf_exp.text import TextReencoder, same_tokenizer

log = logging.getLogger(__name__)


@dataclass
class Experiment:
    cfg: DictConfig
    task: Any  # pilaf_exp.tasks.*: train/test Prompts, decode_spec, sft_examples, tokenizer
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

    @property
    def device(self) -> torch.device:
        """Where work done outside the trainer (iterative DPO's sampling) runs."""
        accelerator = str(self.cfg.trainer.get("accelerator", "cpu"))
        gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
        return torch.device("cuda" if gpu else "cpu")

    @property
    def resume(self) -> bool:
        return self.cfg.get("resume", "auto") == "auto"

    def checkpointer(self) -> Checkpointer:
        ckpt = self.cfg.get("checkpoint") or {}
        return Checkpointer(self.output_dir / "checkpoints", ckpt.get("every_n_steps"), int(ckpt.get("keep", 2)))

    def base_spec(self) -> dict:
        """What fixes the reference and the oracle: the key of everything cached per task."""
        return reference_spec(self.cfg) | resolved(self.cfg, "oracle")

    def new_policy(self) -> PreTrainedModel:
        """The initial policy: a trainable copy of the reference."""
        return self.trainable(copy.deepcopy(self.reference))

    def load_policy(self, path: Path) -> PreTrainedModel:
        return self.trainable(AutoModelForCausalLM.from_pretrained(path, dtype=self.reference.dtype))

    def trainable(self, policy: PreTrainedModel) -> PreTrainedModel:
        policy.requires_grad_(True)
        if self.cfg.model.get("gradient_checkpointing"):
            policy.gradient_checkpointing_enable()
        return policy.train()

    def decode_spec(self, temperature: float) -> DecodeSpec:
        """The task's decoding rule, in chunks of model.generation.batch_size rows."""
        generation = self.cfg.model.generation
        return replace(
            self.task.decode_spec(temperature),
            max_rows=generation.batch_size,
            max_kv_cache_gb=generation.get("max_kv_cache_gb"),
            engine=generation.get("engine", "auto"),
        )

    def evaluator(self, spec: DecodeSpec, beta: float) -> Evaluator:
        ev = self.cfg.eval
        return Evaluator(self.task.test, spec, beta, int(ev.seed), int(ev.batch_size))

    def trainer(self, **kwargs) -> L.Trainer:
        if "SLURM_JOB_ID" in os.environ:  # our checkpoints handle pre-emption, not Lightning's hpc_ckpt
            kwargs.setdefault("plugins", [SLURMEnvironment(auto_requeue=False)])
        return instantiate(self.cfg.trainer)(logger=self.loggers, **kwargs)


def resolved(cfg: DictConfig, *keys: str) -> dict:
    return {key: OmegaConf.to_container(cfg[key], resolve=True) for key in keys}


def reference_spec(cfg: DictConfig) -> dict:
    """What fixes the SFT reference: the task, the policy checkpoint and the SFT settings (not
    batch sizes or memory limits, which change how a run executes, not what it computes)."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    spec = resolved(cfg, "task") | {"model": {k: model.get(k) for k in ("policy", "tokenizer", "sft")}}
    fingerprint = checkpoint_fingerprint(cfg.model.policy.get("path"))
    if fingerprint:
        spec["checkpoint"] = fingerprint
    return spec


def make(node: DictConfig, **kwargs: Any) -> Any:
    """hydra's instantiate, letting a loader's one-line ConfigError through unwrapped."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, ConfigError):
            raise error.__cause__ from None
        raise


def build_reference(cfg: DictConfig, task: Any) -> PreTrainedModel:
    """The SFT model (reference and initial policy), from the on-disk cache when it exists.
    With `model.sft.steps: 0` the checkpoint itself is the reference (already fine-tuned)."""
    sft = cfg.model.sft
    if int(sft.steps) == 0:
        return make(cfg.model.policy)

    def build() -> PreTrainedModel:
        count = sft.get("demonstrations") or sft.steps * sft.batch_size
        examples = task.sft_examples(count, torch.Generator().manual_seed(sft.seed))
        with torch.random.fork_rng():
            L.seed_everything(sft.seed, verbose=False)
            policy = make(cfg.model.policy)
            # SFT runs on one device of the configured accelerator (see README: paper setting).
            trainer = partial(instantiate(cfg.trainer), devices=1, strategy="auto")
            return train_sft(policy, examples, sft.lr, sft.batch_size, sft.steps, sft.seed, trainer)

    spec = reference_spec(cfg)
    dtype = getattr(torch, cfg.model.policy.get("dtype", "float32"))
    return load_or_build_model(Path(cfg.cache_dir) / "sft", spec, build, dtype=dtype)


def build_oracle(cfg: DictConfig, task: Any, reference: PreTrainedModel) -> RewardOracle:
    """The oracle; a proxy oracle (oracle.target_std set) is calibrated to mean 0 / std
    `target_std` on pi_ref's train responses."""
    model = make(cfg.oracle.model)
    encoder = None
    if cfg.oracle.get("tokenizer") is not None:
        oracle_tokenizer = make(cfg.oracle.tokenizer)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = oracle_tokenizer.pad_token_id
        if not same_tokenizer(task.tokenizer, oracle_tokenizer):
            encoder = TextReencoder(task.tokenizer, oracle_tokenizer, task.to_messages, int(cfg.oracle.max_length))
    elif task.tokenizer is not None and model.config.vocab_size < len(task.tokenizer):
        raise ConfigError(
            f"oracle.tokenizer is null (share the policy's) but the oracle's vocabulary ({model.config.vocab_size}) "
            f"is smaller than the policy tokenizer's ({len(task.tokenizer)}): set oracle.tokenizer.path"
        )
    oracle = RewardOracle(model, pad_token_id=model.config.pad_token_id, encoder=encoder).eval()
    if cfg.oracle.get("target_std") is not None:
        generator = torch.Generator().manual_seed(cfg.task.get("seed", 0))
        count = min(int(cfg.oracle.calibration_prompts), len(task.train))
        prompts = task.train[torch.randperm(len(task.train), generator=generator)[:count]]
        sources = torch.full((count,), POLICY)
        out = decode(reference, reference, prompts.ids, prompts.mask, sources, task.decode_spec(1.0), generator)
        raw = oracle.raw_score(prompts.ids, prompts.mask, out.tokens, out.mask)
        oracle.calibrate(raw, float(cfg.oracle.target_std))
    return oracle


def build(cfg: DictConfig) -> Experiment:
    tokenizer = make(cfg.model.tokenizer) if cfg.model.get("tokenizer") is not None else None
    task = make(cfg.task, **({"tokenizer": tokenizer} if tokenizer is not None else {}))
    reference = build_reference(cfg, task)
    if tokenizer is not None and len(tokenizer) > reference.config.vocab_size:
        raise ConfigError(
            f"model.tokenizer has {len(tokenizer)} tokens but the policy's vocabulary is {reference.config.vocab_size}"
        )
    exp = Experiment(
        cfg=cfg,
        task=task,
        reference=reference,
        oracle=build_oracle(cfg, task, reference),
        sampler=instantiate(cfg.sampler),
        labeler=instantiate(cfg.oracle.labeler),
        loggers=[instantiate(node) for node in cfg.logger.values()] if cfg.get("logger") else [],
    )
    # Fail now, not mid-run, if the configured decode batch cannot fit the KV-cache budget.
    spec = exp.decode_spec(float(cfg.algo.temperature))
    positions = task.train.ids.shape[1] + spec.max_new_tokens
    check_kv_budget([(reference, spec.max_rows), (reference, spec.max_rows)], positions, spec)
    return exp


def exact_optimum(exp: Experiment) -> dict[str, float]:
    """J* and J(pi_ref) by enumeration on the first `eval.optimum_prompts` test prompts (cached)."""
    count = int(exp.cfg.eval.optimum_prompts)
    if count <= 0 or not getattr(exp.task, "enumerable", False):
        return {}
    beta = float(exp.cfg.algo.beta)
    # Keyed by the reference's and the calibrated oracle's actual weights too: the config alone
    # does not fix them across code versions (the calibration draws from pi_ref).
    weights = weights_fingerprint(exp.reference, exp.oracle)
    spec = {"stage": "optimum", "base": exp.base_spec(), "beta": beta, "prompts": count, "weights": weights}
    prompts = exp.task.test.ids[:count]
    task = exp.task
    return load_or_compute_json(
        Path(exp.cfg.cache_dir) / "optimum",
        spec,
        lambda: optimum(exp.reference, exp.oracle, prompts, task.vocab_size, task.response_length, beta),
    )


RECEIVED: set[str] = set()  # stop signals this process received


def on_usr1(*_: Any) -> None:
    RECEIVED.add("SIGUSR1")
    os.kill(os.getpid(), signal.SIGTERM)  # from here on the SIGTERM path: checkpoint, then exit


@contextmanager
def usr1_as_sigterm() -> Iterator[None]:
    """SIGUSR1 (SLURM's pre-emption warning) stops the run like SIGTERM: checkpoint, then exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGUSR1, on_usr1)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)


def leave_for_requeue() -> None:
    """Under SLURM, a stopped run must not look finished: submitit would hand the sweep an empty
    result while SLURM runs the job again. A SIGUSR1 (time limit or pre-emption warning) asks
    SLURM to requeue the job; a SIGTERM comes with the requeue or cancellation already decided."""
    job = os.environ["SLURM_JOB_ID"]
    if "SIGUSR1" in RECEIVED:
        subprocess.run(["scontrol", "requeue", job], check=False)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(0)  # skip submitit's result file: the requeued job writes it when it finishes


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment end to end; write its outputs to cfg.output_dir; return the summary."""
    validate(cfg)
    out_dir = Path(cfg.output_dir)
    # Under DDP the other ranks re-run this function in the same directory: rank 0 owns it.
    lead = rank_zero_only.rank == 0
    if lead:
        outputs.claim_run_dir(out_dir, float(cfg.get("min_free_disk_gb", 0.0)))
        outputs.save_config(cfg, out_dir)
    L.seed_everything(cfg.seed, verbose=False)
    started = time.perf_counter()
    exp = build(cfg)
    algo = instantiate(cfg.algo)
    optimum_started = time.perf_counter()
    fixed = exact_optimum(exp)
    optimum_seconds = time.perf_counter() - optimum_started
    if hasattr(exp.task, "demonstrations"):  # a task that knows its demonstrations' distribution
        fixed |= describe_policy(exp.reference, exp.task, algo.temperature)
    for logger in exp.loggers:
        logger.log_metrics(fixed, step=0)
    try:
        with usr1_as_sigterm():
            fitted = algo.fit(exp)
    except SIGTERMException:
        log.warning("stopped by a signal; checkpoint in %s: run the same command again to resume", out_dir)
        print(f"interrupted: checkpoint saved in {out_dir / 'checkpoints'}; run the same command again to resume")
        if "SLURM_JOB_ID" in os.environ:
            leave_for_requeue()
        return {}
    wall = time.perf_counter() - started
    record = fitted.record
    if record.world_size > 1:  # each rank's own account, to check the ranks agree
        outputs.write_json(out_dir / "ranks" / f"rank_{record.rank}.json", outputs.rank_report(record, fitted.policy))
    if cfg.get("save_policy") and lead:
        fitted.policy.save_pretrained(out_dir / "policy")
    if not lead:
        return {}

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
        **{f"task/skipped_{reason}": count for reason, count in exp.task.skipped.items()},
        **fitted.record.notes,
        "world_size": record.world_size,
    }
    seconds = fitted.record.stopwatch.seconds | {"optimum": optimum_seconds}
    timing = outputs.timing(seconds, wall, pairs=fitted.record.pairs_labelled) | fitted.record.run_info
    outputs.write_json(out_dir / "summary.json", summary)
    outputs.write_json(out_dir / "timing.json", timing)
    outputs.write_history(out_dir / "eval_history.csv", history)
    outputs.plot_reward_kl(history, out_dir / "reward_kl.png", title=f"{algo.name} DPO, {exp.sampler.name}")
    outputs.print_result(summary, timing, out_dir)
    for logger in exp.loggers:
        logger.finalize("success")
    return summary
