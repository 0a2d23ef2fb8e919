"""The LightningModules that train the policy with DPO. They only wire the pure pieces: the
annotator (sampling + labelling), the loss in `dpo.py` and the evaluator."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from pilaf_exp.infra.checkpoints import rng_states
from pilaf_exp.infra.ledger import Ledger
from pilaf_exp.infra.names import (
    ANNOTATIONS,
    EVALUATION,
    TRAIN_ACCURACY,
    TRAIN_GRAD_NORM,
    TRAIN_LOSS,
    TRAIN_REWARD_MARGIN,
)
from pilaf_exp.infra.ranks import RANK_SEED_STRIDE, Ranks
from pilaf_exp.models.logprobs import sequence_logprob
from pilaf_exp.sampling.pairs import PairBatch
from pilaf_exp.training.dpo import dpo_loss
from pilaf_exp.training.settings import Training


class NonFiniteError(RuntimeError):
    """Training produced a NaN or infinity; the message says where and what was kept."""


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """The policy in eval mode while it samples or is evaluated (no dropout), back to its mode after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class DPOModule(L.LightningModule):
    """DPO on labelled pairs with a frozen reference, from one `Training` (the settings, the models,
    the annotator, the evaluator, the run's context and record); evaluates when the evaluator's
    schedule says, saves the run on the checkpointer's schedule and when the run is stopping.

    `resume`: the checkpoint being resumed (its optimizer state is loaded); `extra_state`: what the
    algorithm needs back on resume (iterative DPO: the round)."""

    def __init__(
        self, training: Training, resume: dict[str, Any] | None = None, extra_state: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.settings = training.settings
        self.policy = training.policy
        self.reference = freeze(training.reference)
        self.oracle = freeze(training.annotator.oracle)
        self.annotator = training.annotator
        self.evaluator = training.evaluator
        self.record = training.record
        self.run = training.run
        self.resume_optimizer = resume["optimizer_states"][0] if resume else None
        self.extra_state = extra_state or {}
        self.ledger: Ledger | None = None  # online DPO's annotation ledger (its rank is known at fit start)

    def train(self, mode: bool = True) -> DPOModule:
        # Lightning switches the whole module to train mode; the frozen models stay in eval.
        super().train(mode)
        self.reference.eval()
        self.oracle.eval()
        return self

    def configure_optimizers(self) -> torch.optim.Optimizer:
        settings = self.settings
        optimizer = settings.optimizer(self.policy.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        if self.resume_optimizer is not None:
            state, strategy = self.resume_optimizer, self.trainer.strategy
            if hasattr(strategy, "optimizer_state_to_load"):  # sharded parameters (training/strategies.py)
                state = strategy.optimizer_state_to_load(optimizer, state)
            optimizer.load_state_dict(state)
        return optimizer

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for p in self.policy.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)  # one fused reduction over every gradient
        if not torch.isfinite(norm):
            self.stop_non_finite(f"the gradient norm is {norm.item()}")
        if self.logger_writes_this_step():
            self.log(TRAIN_GRAD_NORM, norm)  # before trainer.gradient_clip_val clips it

    def stop_non_finite(self, what: str) -> None:
        """Stop before a non-finite value reaches the weights; the checkpoints on disk stay as they are."""
        saved = self.run.checkpointer.saved()
        kept = f"the last good checkpoint is {saved[-1]}" if saved else "no checkpoint was written"
        raise NonFiniteError(f"{what} at step {self.run_step}: stopped; {kept} (lower algo.lr?)")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The frozen reference and oracle are rebuilt from the config: keep only the policy.
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("policy.")}
        # The record as of the last completed step: a checkpoint taken mid-step (on a signal) resumes
        # at that step and replays its micro-batches from the ledger.
        record = self.step_record or self.record.state()
        checkpoint["pilaf"] = {
            "record": record,
            "run_step": self.run_step,
            "rng": rng_states(),
            "extra": self.extra_state,
        }

    @property
    def run_step(self) -> int:
        """Training steps of the whole run so far (iterative DPO spans several trainers)."""
        return self.record.step_offset + self.global_step

    def loss(self, pairs: PairBatch) -> dict[str, Tensor]:
        """DPO on preferred-first pairs (a = chosen, b = rejected)."""
        # One forward per model over [chosen; rejected]: [2B, P + T].
        prompts, masks = pairs.prompt_ids.repeat(2, 1), pairs.prompt_mask.repeat(2, 1)
        responses = torch.cat([pairs.response_a, pairs.response_b])
        response_masks = torch.cat([pairs.mask_a, pairs.mask_b])
        logp_policy = sequence_logprob(self.policy, prompts, masks, responses, response_masks)
        with torch.inference_mode():  # frozen: no autograd bookkeeping; cloned out to enter the loss
            logp_reference = sequence_logprob(self.reference, prompts, masks, responses, response_masks)
        logp_reference = logp_reference.clone()
        loss, margin = dpo_loss(*logp_policy.chunk(2), *logp_reference.chunk(2), self.settings.beta)
        if not torch.isfinite(loss):
            self.stop_non_finite(f"{TRAIN_LOSS} is {loss.item()}")
        mean_margin = margin.mean().detach()
        if self.logger_writes_this_step():
            self.log(TRAIN_LOSS, loss, prog_bar=True)
            self.log(TRAIN_REWARD_MARGIN, mean_margin)
            self.log(TRAIN_ACCURACY, (margin > 0).float().mean())
            # Every rank labels the same number of pairs per step.
            self.log(ANNOTATIONS, float(self.record.annotations * self.trainer.world_size))
        return {"loss": loss, "reward_margin": mean_margin}

    def logger_writes_this_step(self) -> bool:
        """Whether Lightning's loggers write this step's values (every `log_every_n_steps`).

        `self.log` inspects `training_step`'s signature on every call: four calls cost ~10% of a
        step of the default model. Step values nobody writes are skipped (the progress bar's loss
        then updates on logging steps only); unknown Lightning internals fall back to logging."""
        connector = getattr(self.trainer, "_logger_connector", None)
        return bool(getattr(connector, "should_update_logs", True))

    def on_fit_start(self) -> None:
        self.record.rank, self.record.world_size = self.global_rank, self.trainer.world_size
        self.step_record = copy.deepcopy(self.record.state())

    def on_train_start(self) -> None:
        if self.run_step == 0:
            self.evaluate()  # the starting policy (the SFT model itself)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        checkpointer = self.run.checkpointer
        if not (batch_idx + 1) % self.trainer.accumulate_grad_batches:  # the optimizer just stepped
            if self.evaluator.schedule.due(self.run_step, trainer_end=self.global_step == self.trainer.max_steps):
                self.evaluate()
            self.step_record = copy.deepcopy(self.record.state())
            # After the evaluation, so a resumed run has this step's evaluation in its history.
            if checkpointer.due(self.run_step):
                self.save_checkpoint()
        # Stopping (a signal, agreed by every rank in `stop.StopTogether`, which runs before this
        # hook): Lightning leaves after this batch; save where the run stands.
        if self.trainer.received_sigterm and not checkpointer.has(self.run_step):
            self.save_checkpoint()

    def save_checkpoint(self) -> None:
        if self.ledger:  # a checkpoint must never be ahead of the ledger entries it resumes from
            self.ledger.flush()
        self.run.checkpointer.save(self.trainer, self.run_step)

    @property
    def ranks(self) -> Ranks:
        """This rank, the number of ranks, and a sum over them (Lightning's strategy)."""
        return Ranks(self.global_rank, self.trainer.world_size, self.sum_over_ranks)

    def sum_over_ranks(self, tensor: Tensor) -> Tensor:
        return self.trainer.strategy.reduce(tensor.to(self.device), reduce_op="sum")

    def evaluate(self) -> None:
        if self.record.history and self.record.history[-1]["step"] == self.run_step:
            return  # already evaluated at this step
        ranks = self.ranks
        with self.run.stopwatch(EVALUATION), evaluating(self.policy):
            metrics = self.evaluator(self.policy, self.reference, self.oracle, self.run_step, ranks)
        metrics |= self.record.cost_metrics(ranks)
        self.record.history.append({"step": self.run_step, **metrics})
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.run_step)


class OnlineDPOModule(DPOModule):
    """Online DPO: every step samples pairs from the current policy, labels them, steps once.
    Its prompts come from the trainer's data module (`data.stream.PromptStream`)."""

    def on_fit_start(self) -> None:
        super().on_fit_start()
        # Sampling + labelling noise, on the models' device; each rank draws its own.
        seed = self.run.seed + RANK_SEED_STRIDE * self.global_rank
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.ledger = Ledger(self.run.output_dir / "ledger" / f"rank_{self.global_rank}", self.run.stopwatch)
        resumed_at = self.record.step_offset
        if resumed_at:  # continue the noise stream where the last step before the checkpoint left it
            entry = self.ledger.read(resumed_at - 1, self.trainer.accumulate_grad_batches - 1)
            if entry is None:
                raise RuntimeError(f"cannot resume at step {resumed_at}: its ledger entry is missing")
            self.generator.set_state(entry["generator"])
            # The checkpoint holds rank 0's counts; every rank recounts its own pairs from its ledger.
            self.record.recount([e for e in self.ledger.entries() if e["step"] < resumed_at])

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        prompt_ids, prompt_mask = batch
        key = (self.run_step, batch_idx % self.trainer.accumulate_grad_batches)  # (step, micro-batch)
        with evaluating(self.policy):  # sample as the policy is, not with training-time noise (dropout)
            pairs, a_preferred = self.annotator(
                self.policy, self.reference, prompt_ids, prompt_mask, self.generator, self.ledger, key, self.run_step
            )
        return self.loss(self.record.add(self.run_step, pairs, a_preferred))


class DatasetDPOModule(DPOModule):
    """DPO on a labelled (preferred-first) dataset: one round of iterative DPO. The dataset is made
    by `make_loader(module)` once the trainer has set the models up on every rank (under FSDP they
    are sharded then, and sampling must go through the module's models, which gather their weights
    in their own forward); every rank makes its own share."""

    def __init__(
        self,
        training: Training,
        make_loader: Callable[[DPOModule], DataLoader],
        resume: dict[str, Any] | None = None,
        extra_state: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(training, resume, extra_state)
        self.make_loader = make_loader

    def train_dataloader(self) -> DataLoader:
        return self.make_loader(self)

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> dict[str, Tensor]:
        return self.loss(PairBatch.from_tensors(*batch))
