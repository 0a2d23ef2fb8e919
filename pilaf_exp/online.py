"""The online-DPO LightningModule: each step samples pairs from the current policy, asks the
oracle for labels and takes one DPO step. It only wires the pure pieces together."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from pilaf_exp.data import PreferenceLog
from pilaf_exp.dpo import dpo_loss, sequence_logprob
from pilaf_exp.generation import DecodeSpec
from pilaf_exp.metrics import Evaluator
from pilaf_exp.oracle import RewardOracle
from pilaf_exp.samplers import PairBatch, PairSampler
from pilaf_exp.timing import Stopwatch


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


class OnlineDPOModule(L.LightningModule):
    def __init__(
        self,
        policy: nn.Module,
        reference: nn.Module,
        oracle: RewardOracle,
        sampler: PairSampler,
        labeler: Any,
        evaluator: Evaluator,
        spec: DecodeSpec,
        beta: float,
        lr: float,
        eval_every: int,
        seed: int,
    ) -> None:
        super().__init__()
        self.policy = policy
        self.reference = freeze(reference)
        self.oracle = freeze(oracle)
        self.sampler, self.labeler, self.evaluator, self.spec = sampler, labeler, evaluator, spec
        self.beta, self.lr, self.eval_every = beta, lr, eval_every
        self.generator = torch.Generator().manual_seed(seed)  # sampling + labelling noise
        self.preferences = PreferenceLog()
        self.history: list[dict[str, float]] = []  # one row per evaluation
        self.stopwatch = Stopwatch()
        self.generation_passes = 0.0
        self.selection_passes = 0.0

    def train(self, mode: bool = True) -> OnlineDPOModule:
        # Lightning switches the whole module to train mode; the frozen models stay in eval.
        super().train(mode)
        self.reference.eval()
        self.oracle.eval()
        return self

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.policy.parameters(), lr=self.lr)

    @property
    def annotations(self) -> int:
        """Responses shown to the oracle: 2 per labelled pair (the paper's annotation cost)."""
        return 2 * len(self.preferences)

    def label(self, pairs: PairBatch) -> Tensor:
        """True where the oracle prefers y_a. Both responses are scored in one call: [2B]."""
        scores = self.oracle.score(
            pairs.prompt_ids.repeat(2, 1),
            pairs.prompt_mask.repeat(2, 1),
            torch.cat([pairs.response_a, pairs.response_b]),
            torch.cat([pairs.mask_a, pairs.mask_b]),
        )
        score_a, score_b = scores.chunk(2)
        return self.labeler(score_a, score_b, self.generator)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        prompt_ids, prompt_mask = batch
        with self.stopwatch("sampling"):
            pairs = self.sampler.sample(self.policy, self.reference, prompt_ids, prompt_mask, self.spec, self.generator)
        with self.stopwatch("labelling"):
            a_preferred = self.label(pairs)
        self.preferences.add(self.global_step, pairs, a_preferred)
        self.generation_passes += pairs.generation_passes
        self.selection_passes += pairs.selection_passes

        prefer = a_preferred[:, None]
        chosen = torch.where(prefer, pairs.response_a, pairs.response_b)
        rejected = torch.where(prefer, pairs.response_b, pairs.response_a)
        chosen_mask = torch.where(prefer, pairs.mask_a, pairs.mask_b)
        rejected_mask = torch.where(prefer, pairs.mask_b, pairs.mask_a)
        # One forward per model over [chosen; rejected]: [2B, P + T].
        prompts, masks = prompt_ids.repeat(2, 1), prompt_mask.repeat(2, 1)
        responses, response_masks = torch.cat([chosen, rejected]), torch.cat([chosen_mask, rejected_mask])
        logp_policy = sequence_logprob(self.policy, prompts, masks, responses, response_masks)
        with torch.no_grad():
            logp_reference = sequence_logprob(self.reference, prompts, masks, responses, response_masks)
        batch_size = len(prompt_ids)
        loss, margin = dpo_loss(
            logp_policy[:batch_size],
            logp_policy[batch_size:],
            logp_reference[:batch_size],
            logp_reference[batch_size:],
            self.beta,
        )
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/reward_margin", margin.mean())
        self.log("train/accuracy", (margin > 0).float().mean())
        self.log("annotations/total", float(self.annotations))
        return loss

    def on_train_start(self) -> None:
        self.evaluate()  # step 0: the SFT policy itself

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.global_step % self.eval_every == 0 or self.global_step == self.trainer.max_steps:
            self.evaluate()

    def evaluate(self) -> dict[str, float]:
        with self.stopwatch("evaluation"):
            metrics = self.evaluator(self.policy, self.reference, self.oracle)
        pairs = max(len(self.preferences), 1)
        metrics |= {
            "annotations/total": float(self.annotations),
            "sampling/forward_passes_per_pair": self.generation_passes / pairs,
            "sampling/selection_passes_per_pair": self.selection_passes / pairs,
        }
        row = {"step": self.global_step, **metrics}
        if not self.history or self.history[-1]["step"] != self.global_step:
            self.history.append(row)
            for logger in self.loggers:
                logger.log_metrics(metrics, step=self.global_step)
        return metrics
