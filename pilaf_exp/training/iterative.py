"""Iterative DPO (Xiong et al. 2024): K rounds of (sample and label a dataset with the policy as
it stands, then train DPO on it). The policy carries over; pi_ref stays the SFT model.

Paper protocol (`vanilla_first_iteration`): round 1 uses vanilla sampling for every sampler
(`first_round_sampler`, conf/sampler/vanilla.yaml by conf/algo/iterative.yaml's defaults).
It is computed once per (task, model, oracle, algorithm settings, seed), cached, and every
sampler's run continues from that same checkpoint (`training.round_one`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from functools import partial

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pilaf_exp.data.prompts import Prompts
from pilaf_exp.data.stream import prompt_stream
from pilaf_exp.evaluation.evaluator import Evaluator
from pilaf_exp.infra.atomic import write_atomic
from pilaf_exp.infra.cache import source_fingerprint
from pilaf_exp.infra.ledger import Ledger
from pilaf_exp.infra.names import FIT
from pilaf_exp.infra.ranks import RANK_SEED_STRIDE
from pilaf_exp.labelling.annotate import Annotator
from pilaf_exp.sampling.pairs import PairBatch
from pilaf_exp.sampling.samplers import Sampler
from pilaf_exp.training.context import RunContext
from pilaf_exp.training.module import DatasetDPOModule, evaluating
from pilaf_exp.training.record import Fitted, RunRecord
from pilaf_exp.training.resume import latest_checkpoint, resume_from
from pilaf_exp.training.round_one import shared_first_round
from pilaf_exp.training.settings import DPOSettings, Training

# The code that computes a round: part of the shared round 1's cache key, so a change to it is never
# served an old round (the configs alone do not fix what these modules compute).
TRAINING_CODE = source_fingerprint(
    "pilaf_exp.training", "pilaf_exp.sampling", "pilaf_exp.labelling", "pilaf_exp.models"
)


@dataclass(kw_only=True)
class IterativeDPO(DPOSettings):
    iterations: int
    prompts_per_iteration: int  # pairs labelled per iteration, per rank (as online DPO's batch_size)
    first_round_sampler: Sampler  # round 1's sampler under the paper protocol (conf/sampler/vanilla.yaml)
    sample_batch_size: int = 512  # prompts per sampling call while building a dataset
    vanilla_first_iteration: bool = True  # round 1 shared by every sampler, with `first_round_sampler`

    @property
    def steps_per_round(self) -> int:
        return -(-self.prompts_per_iteration // self.batch_size)

    @property
    def last_step(self) -> int:
        return self.iterations * self.steps_per_round

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
        training = Training(self, policy, reference, annotator, evaluator, run, RunRecord())
        first = 1
        resumed = latest_checkpoint(run.checkpointer, run.resume)
        # The cached round 1 is built by one process under a lock. The ranks of a multi-rank run
        # start one by one (at the first trainer.fit), and a rank waiting on that lock would hold up
        # the collectives of the rank inside it: a multi-rank run computes its own round 1.
        if self.vanilla_first_iteration and run.processes == 1:
            in_round_1 = resumed is not None and resumed[1]["pilaf"]["extra"]["iteration"] == 1

            def round_one(first_round: Training, resume: dict | None) -> None:
                self.iterate(first_round, prompts, 1, resume)

            first_round = self.round_parts(training, 1)
            record = shared_first_round(self.settings(), round_one, first_round, resumed[1] if in_round_1 else None)
            training = replace(training, record=record)
            resumed = None if in_round_1 else resumed
            first = 2
        if resumed is not None:  # mid-round: continue that round's training from its checkpoint
            resume_from(policy, training.record, resumed)
            first = resumed[1]["pilaf"]["extra"]["iteration"]
        for iteration in range(first, self.iterations + 1):
            resume = resumed[1] if resumed is not None and iteration == first else None
            self.iterate(self.round_parts(training, iteration), prompts, iteration, resume)
        return Fitted(policy, training.record)

    def round_parts(self, training: Training, iteration: int) -> Training:
        """The round's parts: round 1 samples with `first_round_sampler` under the paper protocol."""
        if iteration == 1 and self.vanilla_first_iteration:
            return replace(training, annotator=training.annotator.with_sampler(self.first_round_sampler))
        return training

    def settings(self) -> dict:
        """What fixes a round's outcome besides the models and the seed (key of the shared round 1)."""
        skipped = ("iterations", "vanilla_first_iteration", "first_round_sampler", "optimizer")
        settings = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skipped}
        optimizer = getattr(self.optimizer, "func", self.optimizer)  # a functools.partial from the config
        sampler = self.first_round_sampler  # its class and settings (numbers), not its address
        return settings | {
            "optimizer": qualified_name(optimizer),
            "first_round_sampler": {"class": qualified_name(type(sampler)), **vars(sampler)},
            "code": TRAINING_CODE,
        }

    def round_seed(self, seed: int, iteration: int) -> int:
        # Each round's randomness depends only on (run seed, round), so a round replays the same
        # whether the rounds before it were computed here or loaded from the cache.
        return seed * 10_007 + iteration

    def iterate(self, training: Training, prompts: Prompts, iteration: int, resume: dict | None = None) -> None:
        """One round: one epoch of DPO over a dataset labelled with the policy as it stands, continuing
        the policy (from `resume`, a checkpoint taken during this round, when given)."""
        record, steps = training.record, self.steps_per_round
        round_start = resume["pilaf"]["extra"]["round_start"] if resume else record.step_offset
        done = record.step_offset - round_start  # steps of this round already taken
        if done >= steps:  # checkpointed at the round's last step: nothing left to train
            return
        make_loader = partial(self.round_loader, training, prompts, iteration, done)
        extra_state = {"iteration": iteration, "round_start": round_start}
        module = DatasetDPOModule(training, make_loader, resume, extra_state)
        trainer = training.run.make_trainer(
            max_steps=steps - done,
            max_epochs=1,
            accumulate_grad_batches=self.accumulate,
            use_distributed_sampler=False,  # each rank trains on the pairs it labelled itself
        )
        with training.run.stopwatch(FIT):
            trainer.fit(module)
        record.step_offset += steps - done

    def round_loader(
        self, training: Training, prompts: Prompts, iteration: int, done: int, module: DatasetDPOModule
    ) -> DataLoader:
        """This rank's dataset for the round, in its shuffled order from step `done` on: kept on disk
        once labelled, so an interrupted round neither samples nor queries the oracle again."""
        run, ranks = training.run, module.ranks
        saved = ranks.own(run.output_dir / "rounds") / f"iteration_{iteration}.pt"
        if saved.exists():
            dataset = PairBatch.from_tensors(*torch.load(saved, weights_only=False))
        else:
            ledger = Ledger(ranks.own(run.output_dir / "ledger" / f"iteration_{iteration}"), run.stopwatch)
            dataset = self.collect(training, module, prompts, iteration, ledger)
            write_atomic(saved, lambda f: torch.save(dataset.tensors(), f))
        # Shuffled once per round in steps of batch_size, each step in micro-batches.
        generator = torch.Generator().manual_seed(self.round_seed(run.seed, iteration))
        order = torch.randperm(len(dataset), generator=generator)[done * self.batch_size :]
        return DataLoader(TensorDataset(*dataset.tensors()), batch_size=self.micro, sampler=order.tolist())

    def collect(
        self, training: Training, module: DatasetDPOModule, prompts: Prompts, iteration: int, ledger: Ledger
    ) -> PairBatch:
        """Sample and label this rank's `prompts_per_iteration` pairs (preferred first) with the
        policy as it stands; each sampling batch goes to the ledger first, and is taken from it when
        already there. Sampling goes through the module's models: under FSDP those are the wrapped
        ones, which gather their weights in their own forward."""
        run, record, ranks = training.run, training.record, module.ranks
        seed = self.round_seed(run.seed, iteration)
        generator = torch.Generator(device=module.device).manual_seed(seed + RANK_SEED_STRIDE * ranks.rank)
        batches = -(-self.prompts_per_iteration // self.sample_batch_size)
        # Rank r takes the r-th share of every sampling batch of one seeded stream.
        stream = prompt_stream(prompts, self.sample_batch_size, batches, seed, ranks.rank, ranks.world_size)
        parts, remaining = [], self.prompts_per_iteration
        with evaluating(module.policy):  # sample as the policy is, not with training-time noise (dropout)
            for index, (prompt_ids, prompt_mask) in enumerate(stream):
                prompt_ids, prompt_mask = prompt_ids.to(module.device), prompt_mask.to(module.device)
                batch = slice(0, min(remaining, len(prompt_ids)))
                remaining -= len(prompt_ids[batch])
                step = record.step_offset
                pairs, a_preferred = training.annotator(
                    module.policy,
                    module.reference,
                    prompt_ids[batch],
                    prompt_mask[batch],
                    generator,
                    ledger,
                    (iteration, index),
                    step,
                )
                parts.append(record.add(step, pairs, a_preferred))
        ledger.flush()
        record.flush_preferences(ranks.own(run.output_dir / "preferences" / f"iteration_{iteration}"))
        return PairBatch.concat(parts).to("cpu")


def qualified_name(made: type | Callable) -> str:
    return f"{made.__module__}.{made.__qualname__}"
