"""The parts of an experiment, built from its config: the task, the SFT reference (cached), the
oracle (calibrated), the annotator and the evaluator with their decoding rules, the algorithm,
and the run's context (where it writes, how it resumes, how trainers are made)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel

from pilaf_exp.data.task import EnumerableTask, Task, TokenTask, model_mismatch
from pilaf_exp.evaluation.evaluator import Evaluator
from pilaf_exp.evaluation.exact import ExactEvaluation, ResponseTable
from pilaf_exp.evaluation.schedule import EvalSchedule
from pilaf_exp.infra.cache import (
    checkpoint_fingerprint,
    load_or_build_model,
    load_or_compute_object,
    source_fingerprint,
    weights_fingerprint,
)
from pilaf_exp.infra.checkpoints import Checkpointer
from pilaf_exp.infra.errors import ConfigError
from pilaf_exp.infra.names import OPTIMUM
from pilaf_exp.infra.ranks import planned_processes
from pilaf_exp.infra.signals import under_slurm
from pilaf_exp.infra.timing import Stopwatch
from pilaf_exp.labelling.annotate import Annotator
from pilaf_exp.labelling.encoding import TextReencoder, same_tokenizer
from pilaf_exp.labelling.oracle import RewardOracle
from pilaf_exp.run_output.wandb_pairs import wandb_callbacks
from pilaf_exp.sampling.decoding import POLICY, DecodeSpec, check_kv_budget, decode
from pilaf_exp.training.algorithm import Algorithm
from pilaf_exp.training.context import RunContext
from pilaf_exp.training.record import Fitted
from pilaf_exp.training.sft import train_sft
from pilaf_exp.training.stop import StopTogether

# The code that computes the SFT reference and the exact-evaluation tables: part of their cache keys.
SFT_CODE = source_fingerprint("pilaf_exp.data", "pilaf_exp.models", "pilaf_exp.training.sft")
EXACT_CODE = source_fingerprint("pilaf_exp.evaluation", "pilaf_exp.labelling.oracle")


@dataclass(frozen=True)
class World:
    """What every run on one (task, model, oracle) shares: the data and the two frozen models."""

    task: Task
    reference: PreTrainedModel  # the SFT model: pi_ref and the initial policy
    oracle: RewardOracle


def make(node: DictConfig, **kwargs: Any) -> Any:
    """hydra's instantiate, letting a loader's one-line ConfigError through unwrapped."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, ConfigError):
            raise error.__cause__ from None
        raise


def resolved(cfg: DictConfig, *keys: str) -> dict:
    return {key: OmegaConf.to_container(cfg[key], resolve=True) for key in keys}


def reference_spec(cfg: DictConfig) -> dict:
    """What fixes the SFT reference: the task, the policy checkpoint and the SFT settings (not
    batch sizes or memory limits, which change how a run executes, not what it computes)."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    spec = resolved(cfg, "task") | {"model": {k: model.get(k) for k in ("policy", "tokenizer", "sft")}}
    spec["code"] = SFT_CODE
    fingerprint = checkpoint_fingerprint(cfg.model.policy.get("path"))
    if fingerprint:
        spec["checkpoint"] = fingerprint
    return spec


def world_spec(cfg: DictConfig) -> dict:
    """What fixes the reference and the oracle: part of the key of every cache shared between runs."""
    return reference_spec(cfg) | resolved(cfg, "oracle")


def build_reference(cfg: DictConfig, task: Task) -> PreTrainedModel:
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

    dtype = getattr(torch, cfg.model.policy.get("dtype", "float32"))
    return load_or_build_model(Path(cfg.cache_dir) / "sft", reference_spec(cfg), build, dtype=dtype)


def build_oracle(cfg: DictConfig, task: Task, reference: PreTrainedModel) -> RewardOracle:
    """The oracle; a proxy oracle (oracle.target_std set) is calibrated to mean 0 / std
    `target_std` on pi_ref's train responses."""
    model = make(cfg.oracle.model)
    if isinstance(model, partial):  # an oracle made from the SFT reference (conf/oracle/policy_ratio.yaml)
        model = model(reference=reference)
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
        spec = DecodeSpec.of(task.response_format, 1.0)
        out = decode(reference, reference, prompts.ids, prompts.mask, sources, spec, generator)
        raw = oracle.raw_score(prompts.ids, prompts.mask, out.tokens, out.mask)
        oracle.calibrate(raw, float(cfg.oracle.target_std))
    return oracle


# The world of this process's last run: the runs of a sweep in one process (Hydra's basic launcher,
# a joblib worker) differ in sampler and seed, not in task, reference or oracle, which are frozen.
_last_world: dict[str, World] = {}


def build_world(cfg: DictConfig) -> World:
    """The task, the SFT reference and the oracle; reused from this process's previous run when the
    config fixes the same ones (`world_spec`, the cache directory and the accelerator)."""
    accelerator = cfg.trainer.get("accelerator", "cpu")
    key = json.dumps([world_spec(cfg), str(cfg.cache_dir), str(accelerator)], sort_keys=True, default=str)
    if key not in _last_world:
        _last_world.clear()
        _last_world[key] = fresh_world(cfg)
    return _last_world[key]


def fresh_world(cfg: DictConfig) -> World:
    tokenizer = make(cfg.model.tokenizer) if cfg.model.get("tokenizer") is not None else None
    task = make(cfg.task, **({"tokenizer": tokenizer} if tokenizer is not None else {}))
    reference = build_reference(cfg, task)
    if tokenizer is not None and len(tokenizer) > reference.config.vocab_size:
        raise ConfigError(
            f"model.tokenizer has {len(tokenizer)} tokens but the policy's vocabulary is {reference.config.vocab_size}"
        )
    shape = reference.config.vocab_size, reference.config.max_position_embeddings  # what the task's promise needs
    if isinstance(task, TokenTask) and (mismatch := model_mismatch(task, *shape)):
        raise ConfigError(mismatch)
    return World(task, reference, build_oracle(cfg, task, reference))


def decode_spec(cfg: DictConfig, task: Task, temperature: float) -> DecodeSpec:
    """The task's decoding rule at `temperature`, in chunks of model.generation.batch_size rows."""
    generation = cfg.model.generation
    return DecodeSpec.of(
        task.response_format,
        temperature,
        max_rows=generation.batch_size,
        max_kv_cache_gb=generation.get("max_kv_cache_gb"),
        engine=generation.get("engine", "auto"),
    )


def check_decode_budget(world: World, spec: DecodeSpec) -> None:
    """Fail before training if the configured decode batch cannot fit the KV-cache budget."""
    positions = world.task.train.ids.shape[1] + spec.max_new_tokens
    check_kv_budget([(world.reference, spec.max_rows), (world.reference, spec.max_rows)], positions, spec)


def response_table(cfg: DictConfig, world: World) -> ResponseTable | None:
    """log pi_ref, r* of every response of the first `eval.exact_prompts` test prompts (cached), on
    tasks that can be enumerated; None otherwise or with eval.exact_prompts = 0."""
    count, task = int(cfg.eval.exact_prompts), world.task
    if count <= 0 or not isinstance(task, EnumerableTask):
        return None
    temperature = float(cfg.eval.temperature)
    # Keyed by the reference's and the calibrated oracle's actual weights too: the config alone
    # does not fix them across code versions (the calibration draws from pi_ref).
    weights = weights_fingerprint(world.reference, world.oracle)
    spec = {
        "stage": "response_table",
        "base": world_spec(cfg),
        "prompts": count,
        "temperature": temperature,
        "weights": weights,
        "code": EXACT_CODE,
    }
    prompts = task.test.ids[:count]
    return load_or_compute_object(
        Path(cfg.cache_dir) / "exact",
        spec,
        lambda: ResponseTable.build(
            world.reference, world.oracle, prompts, task.vocab_size, task.response_length, temperature
        ),
    )


def initial_policy(cfg: DictConfig, reference: PreTrainedModel) -> PreTrainedModel:
    """A trainable copy of the reference."""
    policy = copy.deepcopy(reference).requires_grad_(True)
    if cfg.model.get("gradient_checkpointing"):
        policy.activation_checkpointing_enable()
    return policy.train()


def trainer_factory(cfg: DictConfig, loggers: list, callbacks: list[L.Callback]) -> Callable[..., L.Trainer]:
    """Makes the configured lightning.Trainer with the run's loggers and the caller's callbacks; a fresh
    strategy each time (one is bound to the trainer that ran it; iterative DPO makes one per round)."""
    extra: dict[str, Any] = {}
    if under_slurm():  # our checkpoints handle pre-emption, not Lightning's hpc_ckpt
        extra["plugins"] = [SLURMEnvironment(auto_requeue=False)]
    stop = StopTogether()  # every rank stops after the same batch on a signal (training/stop.py)

    def make_trainer(**kwargs: Any) -> L.Trainer:
        return instantiate(cfg.trainer)(logger=loggers, callbacks=[*callbacks, stop], **extra, **kwargs)

    return make_trainer


def run_context(cfg: DictConfig, loggers: list, stopwatch: Stopwatch, callbacks: Sequence[L.Callback]) -> RunContext:
    ckpt = cfg.checkpoint
    output_dir = Path(cfg.output_dir)
    return RunContext(
        seed=int(cfg.seed),
        output_dir=output_dir,
        checkpointer=Checkpointer(output_dir / "checkpoints", ckpt.every_n_steps, int(ckpt.keep)),
        resume=cfg.resume == "auto",
        make_trainer=trainer_factory(cfg, loggers, list(callbacks)),
        loggers=loggers,
        stopwatch=stopwatch,
        processes=planned_processes(cfg.trainer.get("devices"), cfg.trainer.get("num_nodes", 1)),
        cache_dir=Path(cfg.cache_dir),
        cache_spec=world_spec(cfg),
    )


@dataclass(frozen=True)
class Parts:
    """Everything one run is made of; `fit()` hands each part to the algorithm explicitly."""

    cfg: DictConfig
    world: World
    algorithm: Algorithm
    annotator: Annotator
    evaluator: Evaluator
    context: RunContext

    def fit(self) -> Fitted:
        world = self.world
        policy = initial_policy(self.cfg, world.reference)
        return self.algorithm.fit(
            policy, world.reference, world.task.train, self.annotator, self.evaluator, self.context
        )


def build_parts(cfg: DictConfig, callbacks: Sequence[L.Callback] = ()) -> Parts:
    """The run's parts; `callbacks` go to every Lightning trainer of the run."""
    world = build_world(cfg)
    stopwatch = Stopwatch()
    loggers = [instantiate(node) for node in cfg.logger.values()] if cfg.get("logger") else []
    callbacks = [*callbacks, *wandb_callbacks(loggers, world.task.tokenizer)]  # labelled-pairs tables
    algorithm: Algorithm = instantiate(cfg.algo)
    sampling = decode_spec(cfg, world.task, float(algorithm.temperature))
    check_decode_budget(world, sampling)
    annotator = Annotator(instantiate(cfg.sampler), instantiate(cfg.oracle.labeler), world.oracle, sampling, stopwatch)
    with stopwatch(OPTIMUM):
        table = response_table(cfg, world)
    ev, beta = cfg.eval, float(algorithm.beta)
    schedule = EvalSchedule(algorithm.eval_every, algorithm.last_step, ev.exact_every)
    exact = ExactEvaluation(table, beta) if table is not None else None
    spec = decode_spec(cfg, world.task, float(ev.temperature))
    evaluator = Evaluator(
        world.task.test, spec, beta, int(ev.seed), schedule, int(ev.batch_size), int(ev.samples_per_prompt), exact
    )
    context = run_context(cfg, loggers, stopwatch, callbacks)
    return Parts(cfg, world, algorithm, annotator, evaluator, context)
