"""Iterative DPO (Xiong et al. 2024): K rounds of (sample and label a dataset with the policy as
it stands, then train DPO on it). The policy carries over; pi_ref stays the SFT model.

Paper protocol (`vanilla_first_iteration`): round 1 uses vanilla sampling for every sampler.
It is computed once per (task, model, oracle, algorithm settings, seed), cached, and every
sampler's run continues from that same checkpoint (`training.round_one`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.optim import AdamW, Optimizer
from torch.utils.data import DataLoader, TensorDataset

from pilaf_exp.data.prompts import Prompts
from pilaf_exp.data.stream import prompt_stream
from pilaf_exp.evaluation.evaluator import Evaluator
from pilaf_exp.infra.atomic import write_atomic
from pilaf_exp.infra.cache import source_fingerprint
from pilaf_exp.infra.ledger import Ledger
from pilaf_exp.infra.names import FIT
from pilaf_exp.labelling.annotate import Annotator
from pilaf_exp.sampling.pairs import PairBatch
from pilaf_exp.training.context import RunContext
from pilaf_exp.training.module import DatasetDPOModule, evaluating
from pilaf_exp.training.record import Fitted, RunRecord
from pilaf_exp.training.resume import latest_checkpoint, resume_from
from pilaf_exp.training.round_one import shared_first_round

# The code that computes a round: part of the shared round 1's cache key, so a change to it is never
# served an old round (the configs alone do not fix what these modules compute).
TRAINING_CODE = source_fingerprint(
    "pilaf_exp.training", "pilaf_exp.sampling", "pilaf_exp.labelling", "pilaf_exp.models"
)


@dataclass
class IterativeDPO:
    beta: float
    iterations: int
    prompts_per_iteration: int  # pairs labelled per iteration
    batch_size: int  # pairs per DPO step
    lr: float
    temperature: float  # of the sampled pairs (the annotator's decode spec)
    eval_every: int
    sample_batch_size: int = 512  # prompts per sampling call while building a dataset
    vanilla_first_iteration: bool = True
    micro_batch_size: int | None = None  # pairs per forward/backward; the rest accumulates
    weight_decay: float = 0.0  # the optimizer's decay toward zero (not toward the reference)
    optimizer: Callable[..., Optimizer] = AdamW  # (params, lr, weight_decay) -> optimizer

    def fit(
        self,
        policy: nn.Module,
        reference: nn.Module,
        prompts: Prompts,
        annotator: Annotator,
        evaluator: Evaluator,
        run: RunContext,
    ) -> Fitted:
        """Train `policy` (the initial policy, trainable) for `iterations` rounds on `prompts`."""
        record, first = RunRecord(), 1
        resumed = latest_checkpoint(run.checkpointer, run.resume)
        if self.vanilla_first_iteration:
            in_round_1 = resumed is not None and resumed[1]["pilaf"]["extra"]["iteration"] == 1

            def round_one(record: RunRecord, vanilla: Annotator, resume: dict | None) -> None:
                self.iterate(policy, reference, prompts, vanilla, evaluator, run, record, 1, resume)

            record = shared_first_round(
                self.settings(), round_one, policy, annotator, run, resumed[1] if in_round_1 else None
            )
            resumed = None if in_round_1 else resumed
            first = 2
        if resumed is not None:  # mid-round: continue that round's training from its checkpoint
            resume_from(policy, record, resumed)
            first = resumed[1]["pilaf"]["extra"]["iteration"]
        for iteration in range(first, self.iterations + 1):
            resume = resumed[1] if resumed is not None and iteration == first else None
            self.iterate(policy, reference, prompts, annotator, evaluator, run, record, iteration, resume)
        return Fitted(policy, record)

    def settings(self) -> dict:
        """What fixes a round's outcome besides the models and the seed (key of the shared round 1)."""
        settings = {k: v for k, v in asdict(self).items() if k not in ("iterations", "vanilla_first_iteration")}
        optimizer = getattr(self.optimizer, "func", self.optimizer)  # a functools.partial from the config
        return settings | {"optimizer": f"{optimizer.__module__}.{optimizer.__qualname__}", "code": TRAINING_CODE}

    def round_seed(self, seed: int, iteration: int) -> int:
        # Each round's randomness depends only on (run seed, round), so a round replays the same
        # whether the rounds before it were computed here or loaded from the cache.
        return seed * 10_007 + iteration

    def iterate(
        self,
        policy: nn.Module,
        reference: nn.Module,
        prompts: Prompts,
        annotator: Annotator,
        evaluator: Evaluator,
        run: RunContext,
        record: RunRecord,
        iteration: int,
        resume: dict | None = None,
    ) -> None:
        """One round; its labelled dataset and its training survive an interruption."""
        with run.stopwatch(FIT):
            saved = run.output_dir / "rounds" / f"iteration_{iteration}.pt"
            if saved.exists():  # labelled before an interruption: reuse, do not re-query
                dataset = PairBatch.from_tensors(*torch.load(saved, weights_only=False))
            else:
                ledger = Ledger(run.output_dir / "ledger" / f"iteration_{iteration}", run.stopwatch)
                dataset = self.collect(policy, reference, prompts, annotator, run, record, iteration, ledger)
                write_atomic(saved, lambda f: torch.save(dataset.tensors(), f))
            self.train(policy, reference, annotator, evaluator, run, record, dataset, iteration, resume)

    def collect(
        self,
        policy: nn.Module,
        reference: nn.Module,
        prompts: Prompts,
        annotator: Annotator,
        run: RunContext,
        record: RunRecord,
        iteration: int,
        ledger: Ledger,
    ) -> PairBatch:
        """Sample and label this round's preference dataset (preferred first) with the policy as it
        stands; each sampling batch goes to the ledger first, and is taken from it when already there."""
        device = run.device
        for model in (policy, reference, annotator.oracle):
            model.to(device)  # outside the trainer: sample where the trainer will train
        seed = self.round_seed(run.seed, iteration)
        generator = torch.Generator(device=device).manual_seed(seed)
        batches = -(-self.prompts_per_iteration // self.sample_batch_size)
        stream = prompt_stream(prompts, self.sample_batch_size, batches, seed)
        parts, remaining = [], self.prompts_per_iteration
        with evaluating(policy):  # sample as the policy is, not with training-time noise (dropout)
            for index, (prompt_ids, prompt_mask) in enumerate(stream):
                prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
                batch = slice(0, min(remaining, len(prompt_ids)))
                remaining -= len(prompt_ids[batch])
                step = record.step_offset
                pairs, a_preferred = annotator(
                    policy,
                    reference,
                    prompt_ids[batch],
                    prompt_mask[batch],
                    generator,
                    ledger,
                    (iteration, index),
                    step,
                )
                parts.append(record.add(step, pairs, a_preferred))
        ledger.flush()
        record.flush_preferences(run.output_dir / "preferences" / f"iteration_{iteration}")
        return PairBatch.concat(parts).to("cpu")

    def train(
        self,
        policy: nn.Module,
        reference: nn.Module,
        annotator: Annotator,
        evaluator: Evaluator,
        run: RunContext,
        record: RunRecord,
        dataset: PairBatch,
        iteration: int,
        resume: dict | None = None,
    ) -> None:
        """One epoch of DPO over the round's dataset, continuing the policy (from `resume`, a
        checkpoint taken during this round, when given)."""
        steps = -(-len(dataset) // self.batch_size)
        micro = self.micro_batch_size or self.batch_size
        round_start = resume["pilaf"]["extra"]["round_start"] if resume else record.step_offset
        done = record.step_offset - round_start  # steps of this round already taken
        if done >= steps:  # checkpointed at the round's last step: nothing left to train
            return
        # Shuffled once per round in steps of batch_size, each step in micro-batches.
        generator = torch.Generator().manual_seed(self.round_seed(run.seed, iteration))
        order = torch.randperm(len(dataset), generator=generator)[done * self.batch_size :]
        loader = DataLoader(TensorDataset(*dataset.tensors()), batch_size=micro, sampler=order.tolist())
        module = DatasetDPOModule(
            policy,
            reference,
            annotator.oracle,
            evaluator,
            record,
            run.stopwatch,
            beta=self.beta,
            lr=self.lr,
            eval_every=self.eval_every,
            last_step=self.iterations * steps,
            optimizer=self.optimizer,
            weight_decay=self.weight_decay,
            checkpointer=run.checkpointer,
            resume_optimizer=resume["optimizer_states"][0] if resume else None,
            extra_state={"iteration": iteration, "round_start": round_start},
        )
        trainer = run.make_trainer(
            max_steps=steps - done, max_epochs=1, accumulate_grad_batches=self.batch_size // micro
        )
        trainer.fit(module, loader)
        record.step_offset += steps - done
