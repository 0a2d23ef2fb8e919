"""Iterative DPO (Xiong et al. 2024): K rounds of (sample and label a dataset with the policy as
it stands, then train DPO on it). The policy carries over; pi_ref stays the SFT model.

Paper protocol (`vanilla_first_iteration`): round 1 uses vanilla sampling for every sampler.
It is computed once per (task, model, oracle, algorithm settings, seed), cached, and every
sampler's run continues from that same checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from torch.utils.data import DataLoader, TensorDataset

from pilaf_exp.algos.online import resume_policy_and_record
from pilaf_exp.cache import cache_key
from pilaf_exp.checkpointing import Checkpointer
from pilaf_exp.checks import ConfigError
from pilaf_exp.data import prompt_stream
from pilaf_exp.dpo_module import DatasetDPOModule
from pilaf_exp.durable import write_atomic
from pilaf_exp.labelling import Fitted, LabelledPairs, RunRecord
from pilaf_exp.ledger import Ledger
from pilaf_exp.samplers import PairSampler, VanillaSampler

if TYPE_CHECKING:
    from pilaf_exp.experiment import Experiment


@dataclass
class IterativeDPO:
    beta: float
    iterations: int
    prompts_per_iteration: int  # pairs labelled per iteration
    batch_size: int  # pairs per DPO step
    lr: float
    temperature: float
    eval_every: int
    sample_batch_size: int = 512  # prompts per sampling call while building a dataset
    vanilla_first_iteration: bool = True
    micro_batch_size: int | None = None  # pairs per forward/backward; the rest accumulates
    name: ClassVar[str] = "iterative"

    def fit(self, exp: Experiment) -> Fitted:
        record, policy, first = RunRecord(), exp.new_policy(), 1
        checkpointer = exp.checkpointer()
        if not exp.resume and checkpointer.saved():
            raise ConfigError(f"resume=never but {checkpointer.directory} holds checkpoints: choose another output_dir")
        resumed = checkpointer.latest() if exp.resume else None
        if self.vanilla_first_iteration:
            in_round_1 = resumed is not None and resumed[1]["pilaf"]["extra"]["iteration"] == 1
            policy, record = self.first_iteration_from_cache(exp, checkpointer, resumed[1] if in_round_1 else None)
            resumed = None if in_round_1 else resumed
            first = 2
        if resumed is not None:  # mid-round: continue that round's training from its checkpoint
            path, checkpoint = resumed
            resume_policy_and_record(policy, record, checkpoint)
            record.run_info["resumed_from"] = f"{path} (step {record.step_offset})"
            first = checkpoint["pilaf"]["extra"]["iteration"]
        for iteration in range(first, self.iterations + 1):
            resume = resumed[1] if resumed is not None and iteration == first else None
            self.iterate(exp, policy, record, exp.sampler, iteration, checkpointer, resume)
        return Fitted(policy, record)

    def seed(self, exp: Experiment, iteration: int) -> int:
        # Each round's randomness depends only on (run seed, round), so a round replays the same
        # whether the rounds before it were computed here or loaded from the cache.
        return exp.seed * 10_007 + iteration

    def iterate(
        self, exp: Experiment, policy, record: RunRecord, sampler: PairSampler, iteration: int,
        checkpointer: Checkpointer | None = None, resume: dict | None = None,
    ) -> None:  # fmt: skip
        """One round; with a checkpointer its dataset and training survive an interruption."""
        with record.stopwatch("fit"):
            saved = exp.output_dir / "rounds" / f"iteration_{iteration}.pt"
            if checkpointer and saved.exists():  # labelled before an interruption: reuse, do not re-query
                dataset = LabelledPairs(*torch.load(saved, weights_only=False))
            else:
                ledger = Ledger(exp.output_dir / "ledger" / f"iteration_{iteration}") if checkpointer else None
                dataset = self.collect(exp, policy, record, sampler, iteration, ledger)
                if checkpointer:
                    write_atomic(saved, lambda f: torch.save(dataset.tensors(), f))
            self.train(exp, policy, record, dataset, iteration, checkpointer, resume)

    def collect(
        self, exp: Experiment, policy, record: RunRecord, sampler: PairSampler, iteration: int,
        ledger: Ledger | None = None,
    ) -> LabelledPairs:  # fmt: skip
        """Sample and label this round's preference dataset with the policy as it stands; each
        sampling batch goes to the ledger first, and is taken from it when already there."""
        spec = exp.decode_spec(self.temperature)
        device = exp.device
        for model in (policy, exp.reference, exp.oracle):
            model.to(device)  # outside the trainer: sample where the trainer will train
        generator = torch.Generator(device=device).manual_seed(self.seed(exp, iteration))
        batches = -(-self.prompts_per_iteration // self.sample_batch_size)
        stream = prompt_stream(exp.task.train, self.sample_batch_size, batches, self.seed(exp, iteration))
        policy.eval()
        parts, remaining = [], self.prompts_per_iteration
        for index, (prompt_ids, prompt_mask) in enumerate(stream):
            prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
            batch = slice(0, min(remaining, len(prompt_ids)))
            remaining -= len(prompt_ids[batch])
            parts.append(
                record.sample_and_label(
                    sampler,
                    exp.labeler,
                    exp.oracle,
                    policy,
                    exp.reference,
                    prompt_ids[batch],
                    prompt_mask[batch],
                    spec,
                    generator,
                    record.step_offset,
                    ledger,
                    (iteration, index),
                )  # fmt: skip
            )
        if ledger:
            ledger.flush()
        record.flush_preferences(exp.output_dir / "preferences" / f"iteration_{iteration}")
        return LabelledPairs.concat(parts).to("cpu")

    def train(
        self, exp: Experiment, policy, record: RunRecord, dataset: LabelledPairs, iteration: int,
        checkpointer: Checkpointer | None = None, resume: dict | None = None,
    ) -> None:  # fmt: skip
        """One epoch of DPO over the round's dataset, continuing the policy (from `resume`, a
        checkpoint taken during this round, when given)."""
        steps = -(-len(dataset.prompt_ids) // self.batch_size)
        micro = self.micro_batch_size or self.batch_size
        round_start = resume["pilaf"]["extra"]["round_start"] if resume else record.step_offset
        done = record.step_offset - round_start  # steps of this round already taken
        if done >= steps:  # checkpointed at the round's last step: nothing left to train
            return
        # Shuffled once per round in steps of batch_size, each step in micro-batches.
        generator = torch.Generator().manual_seed(self.seed(exp, iteration))
        order = torch.randperm(len(dataset.prompt_ids), generator=generator)[done * self.batch_size :]
        loader = DataLoader(TensorDataset(*dataset.tensors()), batch_size=micro, sampler=order.tolist())
        spec = exp.decode_spec(self.temperature)
        module = DatasetDPOModule(
            policy, exp.reference, exp.oracle, exp.evaluator(spec, self.beta), record,
            beta=self.beta, lr=self.lr, eval_every=self.eval_every,
        )  # fmt: skip
        module.checkpointer = checkpointer
        module.extra_state = {"iteration": iteration, "round_start": round_start}
        if resume:
            module.resume_optimizer = resume["optimizer_states"][0]
        trainer = exp.trainer(max_steps=steps - done, max_epochs=1, accumulate_grad_batches=self.batch_size // micro)
        trainer.fit(module, loader)
        record.step_offset += steps - done

    def first_iteration_from_cache(self, exp: Experiment, checkpointer: Checkpointer, resume: dict | None = None):
        """Round 1 with vanilla sampling, shared by every sampler: load it, or run and cache it
        (from `resume`, a checkpoint taken while this run was building it, when given)."""
        settings = {k: v for k, v in asdict(self).items() if k not in ("iterations", "vanilla_first_iteration")}
        spec = {"stage": "iterative_dpo_round_1", "base": exp.base_spec(), "algo": settings, "seed": exp.seed}
        target = Path(exp.cfg.cache_dir) / "iteration_1" / cache_key(spec)
        cached = (target / "record.json").exists()
        stopwatch = None
        if not cached:
            policy, record = exp.new_policy(), RunRecord()
            if resume is not None:
                resume_policy_and_record(policy, record, resume)
            self.iterate(exp, policy, record, VanillaSampler(), 1, checkpointer, resume)
            stopwatch = record.stopwatch
            staging = target.with_name(f".staging-{target.name}-{id(record)}")
            policy.save_pretrained(staging / "policy")
            shutil.copytree(exp.output_dir / "preferences" / "iteration_1", staging / "preferences")
            (staging / "record.json").write_text(json.dumps({"spec": spec, **record.state()}, indent=2))
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                staging.rename(target)
            except OSError:  # a concurrent run cached it first: use theirs
                shutil.rmtree(staging, ignore_errors=True)
        else:
            shutil.copytree(target / "preferences", exp.output_dir / "preferences" / "iteration_1")
        state = json.loads((target / "record.json").read_text())
        state.pop("spec")
        record = RunRecord(**state)
        record.stopwatch = stopwatch or record.stopwatch  # round 1's timings, when it ran here
        weights = (target / "policy" / "model.safetensors").read_bytes()
        record.notes["round1/checkpoint_sha256"] = hashlib.sha256(weights).hexdigest()
        record.notes["round1/cached"] = cached
        if cached:  # replay round 1's evaluations into this run's loggers
            for row in record.history:
                for logger in exp.loggers:
                    logger.log_metrics({k: v for k, v in row.items() if k != "step"}, step=row["step"])
        # Every run continues from the stored weights, so all samplers start byte-identical.
        return exp.load_policy(target / "policy"), record
