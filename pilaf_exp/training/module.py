"""The LightningModules that train the policy with DPO. They only wire the pure pieces: the
annotator (sampling + labelling), the loss in `dpo.py` and the evaluator."""

from __future__ import annotations

import copy
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from pilaf_exp.evaluation.evaluator import Evaluator
from pilaf_exp.infra.checkpoints import Checkpointer, rng_states
from pilaf_exp.infra.ledger import Ledger
from pilaf_exp.infra.names import (
    ANNOTATIONS,
    EVALUATION,
    TRAIN_ACCURACY,
    TRAIN_GRAD_NORM,
    TRAIN_LOSS,
    TRAIN_REWARD_MARGIN,
)
from pilaf_exp.infra.timing import Stopwatch
from pilaf_exp.labelling.annotate import Annotator
from pilaf_exp.models.logprobs import sequence_logprob
from pilaf_exp.sampling.pairs import PairBatch
from pilaf_exp.training.dpo import dpo_loss
from pilaf_exp.training.record import RunRecord


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
    """DPO on labelled pairs with a frozen reference; evaluates every `eval_every` steps and at
    `last_step`, the run's last training step.

    `optimizer` makes the optimizer from (parameters, lr, weight_decay); `checkpointer` saves the
    run on schedule and when signalled; `resume_optimizer` is the optimizer state of the checkpoint
    being resumed; `extra_state` is what the algorithm needs back on resume (iterative DPO: the round)."""

    def __init__(
        self,
        policy: nn.Module,
        reference: nn.Module,
        oracle: nn.Module,
        evaluator: Evaluator,
        record: RunRecord,
        stopwatch: Stopwatch,
        beta: float,
        lr: float,
        eval_every: int,
        last_step: int,
        optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.AdamW,
        weight_decay: float = 0.0,
        checkpointer: Checkpointer | None = None,
        resume_optimizer: dict | None = None,
        extra_state: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.policy = policy
        self.reference = freeze(reference)
        self.oracle = freeze(oracle)
        self.evaluator, self.record, self.stopwatch = evaluator, record, stopwatch
        self.beta, self.lr, self.eval_every, self.last_step = beta, lr, eval_every, last_step
        self.optimizer, self.weight_decay = optimizer, weight_decay
        self.checkpointer, self.resume_optimizer = checkpointer, resume_optimizer
        self.extra_state = extra_state or {}
        self.ledger: Ledger | None = None  # online DPO's annotation ledger (its rank is known at fit start)

    def train(self, mode: bool = True) -> DPOModule:
        # Lightning switches the whole module to train mode; the frozen models stay in eval.
        super().train(mode)
        self.reference.eval()
        self.oracle.eval()
        return self

    def configure_optimizers(self) -> torch.optim.Optimizer:
        optimizer = self.optimizer(self.policy.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if self.resume_optimizer is not None:
            optimizer.load_state_dict(self.resume_optimizer)
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
        saved = self.checkpointer.saved() if self.checkpointer else []
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
        loss, margin = dpo_loss(*logp_policy.chunk(2), *logp_reference.chunk(2), self.beta)
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
        # Lightning's own SIGTERM handler broadcasts from inside the signal handler (a collective at a
        # random point of a step) and makes each rank stop on its own flag: ranks then wait for each
        # other forever or lose their peer mid-step. Ours only notes the signal; `stop_requested`
        # decides with all ranks at a batch boundary.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.note_signal)
        if self.run_step == 0:
            self.evaluate()  # the starting policy (the SFT model itself)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not (batch_idx + 1) % self.trainer.accumulate_grad_batches:  # the optimizer just stepped
            if self.run_step % self.eval_every == 0 or self.global_step == self.trainer.max_steps:
                self.evaluate()
            self.step_record = copy.deepcopy(self.record.state())
            # After the evaluation, so a resumed run has this step's evaluation in its history.
            if self.checkpointer and self.checkpointer.due(self.run_step):
                self.save_checkpoint()
        # Signalled (SIGTERM / SIGUSR1): Lightning stops after this batch; save where the run stands.
        if self.stop_requested() and self.checkpointer and not self.checkpointer.has(self.run_step):
            self.save_checkpoint()

    signalled = False  # this rank received SIGTERM (or SIGUSR1, turned into one) since fit started

    def note_signal(self, signum: int, frame: Any) -> None:
        if not self.signalled:
            launcher = self.trainer.strategy.launcher
            if launcher is not None:  # ranks this process started get the signal too, as with Lightning's
                launcher.kill(signum)
        self.signalled = True

    def stop_requested(self) -> bool:
        """Whether any rank was signalled, decided by every rank together at this batch boundary.

        The signal reaches the ranks at different moments; a rank that saved (a collective) or left
        alone would wait forever for the others. One all-reduce of the local flags per batch makes
        the decision collective, and a rank that was not signalled yet is marked as if it were, so
        every rank saves the same checkpoint and leaves Lightning's loop after the same batch."""
        stop = self.signalled or bool(self.trainer.received_sigterm)
        if self.trainer.world_size > 1:
            stop = self.sum_over_ranks(torch.tensor([float(stop)])).item() > 0
        if stop:  # Lightning leaves its loop after this batch, on every rank alike
            self.trainer._signal_connector.received_sigterm = True
        return stop

    def save_checkpoint(self) -> None:
        if self.ledger:  # a checkpoint must never be ahead of the ledger entries it resumes from
            self.ledger.flush()
        self.checkpointer.save(self.trainer, self.run_step)

    def sum_over_ranks(self, tensor: Tensor) -> Tensor:
        return self.trainer.strategy.reduce(tensor.to(self.device), reduce_op="sum")

    def evaluate(self) -> None:
        if self.record.history and self.record.history[-1]["step"] == self.run_step:
            return  # already evaluated at this step
        with self.stopwatch(EVALUATION), evaluating(self.policy):
            metrics = self.evaluator(
                self.policy,
                self.reference,
                self.oracle,
                self.run_step,
                self.run_step == self.last_step,
                self.global_rank,
                self.trainer.world_size,
                self.sum_over_ranks,
            )
        metrics |= self.record.cost_metrics(self.sum_over_ranks)
        self.record.history.append({"step": self.run_step, **metrics})
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.run_step)


class OnlineDPOModule(DPOModule):
    """Online DPO: every step samples pairs from the current policy, labels them, steps once.
    Its prompts come from the trainer's data module (`data.stream.PromptStream`)."""

    def __init__(self, *args: Any, annotator: Annotator, seed: int, ledger_dir: Path | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.annotator, self.seed, self.ledger_dir = annotator, seed, ledger_dir

    def on_fit_start(self) -> None:
        super().on_fit_start()
        # Sampling + labelling noise, on the models' device; each rank draws its own.
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed + 1_000_003 * self.global_rank)
        if self.ledger_dir is not None:
            self.ledger = Ledger(self.ledger_dir / f"rank_{self.global_rank}", self.stopwatch)
        resumed_at = self.record.step_offset
        if resumed_at:  # continue the noise stream where the last step before the checkpoint left it
            entry = self.ledger.read(resumed_at - 1, self.trainer.accumulate_grad_batches - 1) if self.ledger else None
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
    """DPO on a fixed, already labelled (preferred-first) dataset: one round of iterative DPO."""

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> dict[str, Tensor]:
        return self.loss(PairBatch.from_tensors(*batch))
