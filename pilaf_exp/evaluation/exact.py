"""Exact reward, KL and J of a policy on an enumerable task: every response of every evaluation
prompt, weighted by its exact probability, with no sampling noise.

The response tree of a prompt is walked level by level with a KV cache: level d feeds the last
token of each of the V^d prefixes once, so a model reads sum_{d<T} V^d token positions per prompt
(37,449 for V = 8, T = 6) instead of V^(T-1) full sequences (8x more); the last level reads
its parents' cache in place (`siblings_forward`). The oracle's rewards take the same walk one
level deeper on its backbone: the V^T leaves (7/8 of its positions) read their parents' cache in
place (`leaves.leaf_states`) and the scalar head is read at each leaf. The reference's log-probs
and the oracle's rewards do not change during a run: `ResponseTable` computes them once per
(task, reference, oracle, prompts) and is cached with them; a policy then needs one walk.

J(x) = sum_y pi(y|x) [r*(x, y) - beta (log pi(y|x) - log pi_ref(y|x))], at the sampling temperature
(both log-probs at that temperature, as the sampled evaluation does). J*(x) = beta log sum_y
pi_ref(y|x) exp(r*(x, y) / beta) (`ResponseTable.optimum`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from pilaf_exp.evaluation.leaves import descendant_states, lean_reason
from pilaf_exp.infra.names import (
    EXACT_GAIN,
    EXACT_J,
    EXACT_KL,
    EXACT_REWARD,
    OPTIMUM_J_REF,
    OPTIMUM_J_STAR,
    OPTIMUM_PROMPTS,
)
from pilaf_exp.infra.ranks import ONE_PROCESS, Ranks
from pilaf_exp.labelling.oracle import RewardOracle
from pilaf_exp.labelling.policy_ratio import PolicyRatioReward
from pilaf_exp.sampling.engines import cache_argument


def all_sequences(vocab: int, length: int) -> Tensor:
    """[vocab**length, length] every token sequence, last position varying fastest."""
    return torch.tensor(list(itertools.product(range(vocab), repeat=length)), dtype=torch.long).view(-1, length)


@torch.inference_mode()
def response_logprobs(model: nn.Module, prompt: Tensor, vocab: int, length: int, temperature: float = 1.0) -> Tensor:
    """log pi(y|x) of every response y of one prompt ([P], unpadded), at `temperature`:
    [vocab**length] in the order of `all_sequences(vocab, length)`."""
    cache, argument = DynamicCache(), cache_argument(model)
    logits = model(input_ids=prompt[None], use_cache=True, **{argument: cache}).logits[:, -1]  # [1, V]
    logp = torch.zeros(1)  # log-prob of each prefix of the current level: [V^d]
    for depth in range(length):
        # Children of every prefix, prefix-major: row i*V + v extends prefix i with token v.
        logp = (logp[:, None] + torch.log_softmax(logits.float() / temperature, dim=-1)).flatten()  # [V^(d+1)]
        if depth == length - 1:
            return logp
        position = prompt.shape[0] + depth
        if depth == length - 2:  # the last forward, 7/8 of the walk's positions: no cache copy
            logits = last_level_logits(model, cache, argument, len(logp) // vocab, vocab, position)
            continue
        rows = len(logp)
        cache.batch_repeat_interleave(vocab)
        tokens = torch.arange(vocab).repeat(rows // vocab)[:, None]  # [V^(d+1), 1]
        positions = torch.full((rows, 1), position)
        logits = model(input_ids=tokens, position_ids=positions, use_cache=True, **{argument: cache}).logits[:, -1]
    raise ValueError("length must be >= 1")


def last_level_logits(model: nn.Module, cache: DynamicCache, argument: str, parents: int, vocab: int, position: int):
    """[parents * V, vocab] logits of the V children of each cached row: on the lean path
    (leaves.py) for a Llama-layout model, else through the model's own forward."""
    backbone = getattr(model, model.base_model_prefix)
    if lean_reason(backbone) is None:
        hidden = descendant_states(backbone, cache, vocab, position, depth=1)  # [parents * V, H]
        return model.get_output_embeddings()(hidden)
    out = siblings_forward(model, cache, argument, parents, vocab, position)
    return out.logits.reshape(parents * vocab, -1)


def siblings_forward(model: nn.Module, cache: DynamicCache, argument: str, parents: int, vocab: int, position: int):
    """The model's output on each of the V tokens appended to each cached row: [parents, V, ...].

    Copying every row's cache V times (`batch_repeat_interleave`) and appending to the copies was
    half the walk's time. Here the V siblings are one sequence of V tokens per row at the same
    position, each attending to the row's past and to itself only (a 4D mask), so the cache is
    read in place: the same logits to float rounding (tests/evaluation/test_exact.py)."""
    tokens = torch.arange(vocab).repeat(parents).view(parents, vocab)  # [rows, V]
    positions = torch.full((parents, vocab), position)
    sees = torch.cat([torch.ones(vocab, position, dtype=torch.bool), torch.eye(vocab, dtype=torch.bool)], dim=1)
    mask = sees.expand(parents, 1, vocab, position + vocab)  # [rows, 1, V queries, past + V keys]
    return model(input_ids=tokens, position_ids=positions, attention_mask=mask, use_cache=True, **{argument: cache})


@torch.inference_mode()
def response_rewards(oracle: RewardOracle, prompt: Tensor, vocab: int, length: int) -> Tensor:
    """r*(x, y) of every response of one prompt ([P]): [vocab**length], in `all_sequences` order.

    The same walk as `response_logprobs`, on the oracle's backbone: levels 1 .. T-1 grow the
    cache, the leaves (level T, V^T positions) are read from their parents' cache in place and
    the scalar head is applied at each leaf's own position, where the classifier pools (the
    last non-pad token: a response of the embedded task has no padding)."""
    model = oracle.model
    if isinstance(model, PolicyRatioReward):  # r* a log-ratio of two policies: two of the evaluation's own walks
        raw = response_logprobs(model.target, prompt, vocab, length)
        raw = raw - response_logprobs(model.reference, prompt, vocab, length)
        return (raw.float() - oracle.shift) * oracle.scale
    backbone = getattr(model, model.base_model_prefix)  # the transformer under the scalar head
    cache, argument = DynamicCache(), cache_argument(backbone)
    backbone(input_ids=prompt[None], use_cache=True, **{argument: cache})
    lean = lean_reason(backbone) is None
    below = min(length, 2) if lean else 1  # levels read below the cached rows in place
    rows = 1
    for depth in range(length - below):
        rows *= vocab
        cache.batch_repeat_interleave(vocab)
        tokens = torch.arange(vocab).repeat(rows // vocab)[:, None]  # [V^(d+1), 1]
        positions = torch.full((rows, 1), prompt.shape[0] + depth)
        backbone(input_ids=tokens, position_ids=positions, use_cache=True, **{argument: cache})
    position = prompt.shape[0] + length - below
    if lean:
        leaves = descendant_states(backbone, cache, vocab, position, depth=below)  # [V^T, H]
    else:
        leaves = siblings_forward(backbone, cache, argument, rows, vocab, position).last_hidden_state
    raw = model.score(leaves).reshape(vocab**length)  # [V^T]
    return (raw.float() - oracle.shift) * oracle.scale


@dataclass
class ResponseTable:
    """Everything about the evaluation prompts' responses that does not depend on the policy."""

    prompts: Tensor  # [N, P]
    reference_logp: Tensor  # [N, V^T] log pi_ref(y|x) at `temperature`
    reward: Tensor  # [N, V^T] r*(x, y)
    vocab: int
    length: int
    temperature: float

    @classmethod
    def build(
        cls,
        reference: nn.Module,
        oracle: RewardOracle,
        prompts: Tensor,
        vocab: int,
        length: int,
        temperature: float = 1.0,
    ) -> ResponseTable:
        logp = torch.stack([response_logprobs(reference, p, vocab, length, temperature) for p in prompts])
        reward = torch.stack([response_rewards(oracle, p, vocab, length) for p in prompts])
        return cls(prompts, logp, reward, vocab, length, temperature)

    def sums(self, policy: nn.Module, beta: float, rows: Sequence[int], walks: int | None = None) -> Tensor:
        """[3] exact reward, KL and J of `policy` summed over the prompts `rows` (float64; zeros for
        none, so ranks with an empty share add nothing). `walks` >= len(rows): walk that many
        prompts, the extra ones discarded, so that every rank makes the same forward calls (under
        FSDP each forward is a collective: a rank with one walk fewer would leave the others waiting)."""
        device = next(policy.parameters()).device
        total = torch.zeros(3, dtype=torch.double)
        for index in range(len(rows) if walks is None else walks):
            i = rows[index] if index < len(rows) else 0
            logp = response_logprobs(policy, self.prompts[i].to(device), self.vocab, self.length, self.temperature)
            if index < len(rows):
                total += per_prompt_objective(logp.cpu(), self.reference_logp[i], self.reward[i], beta)
        return total

    def optimum(self, beta: float) -> dict[str, float]:
        """J* (at beta) and J(pi_ref) = E_ref r*, means over the prompts."""
        j_star = beta * torch.logsumexp(self.reference_logp.double() + self.reward.double() / beta, dim=-1)
        j_ref = (self.reference_logp.double().exp() * self.reward.double()).sum(-1)
        return {"J_star": j_star.mean().item(), "J_ref": j_ref.mean().item()}


def per_prompt_objective(logp: Tensor, reference_logp: Tensor, reward: Tensor, beta: float) -> Tensor:
    """[..., 3] exact E_pi r*, KL(pi || pi_ref) and J of each prompt from its [..., V^T] log pi, log pi_ref
    and r* (float64): [3] for one prompt, [N, 3] for a table of N."""
    logp, reference_logp, reward = logp.double(), reference_logp.double(), reward.double()
    p = logp.exp()
    expected_reward, kl = (p * reward).sum(-1), (p * (logp - reference_logp)).sum(-1)
    return torch.stack([expected_reward, kl, expected_reward - beta * kl], dim=-1)


@dataclass
class ExactEvaluation:
    """Exact evaluation during training, when `EvalSchedule.exact_due` says (evaluation/schedule.py)."""

    table: ResponseTable
    beta: float
    KEYS: ClassVar[tuple[str, ...]] = (EXACT_REWARD, EXACT_KL, EXACT_J, EXACT_GAIN)

    def optimum(self) -> dict[str, float]:
        """summary.json's `optimum/*`: J* and J(pi_ref) (means over the table's prompts) and how many prompts."""
        values = self.table.optimum(self.beta)
        return {
            OPTIMUM_J_STAR: values["J_star"],
            OPTIMUM_J_REF: values["J_ref"],
            OPTIMUM_PROMPTS: len(self.table.prompts),
        }

    def __call__(self, policy: nn.Module, ranks: Ranks = ONE_PROCESS, is_reference: bool = False) -> dict:
        """Each rank walks its share of the prompts; `ranks` sums the shares.
        `is_reference`: the policy is pi_ref itself (every run's step 0), whose values the table holds."""
        optimum = self.table.optimum(self.beta)
        if is_reference:
            return dict(zip(self.KEYS, (optimum["J_ref"], 0.0, optimum["J_ref"], 0.0)))
        prompts = range(len(self.table.prompts))
        walks = len(Ranks(0, ranks.world_size).share(prompts))  # rank 0's share is the largest
        sums = ranks.sum(self.table.sums(policy, self.beta, ranks.share(prompts), walks)).cpu()
        reward, kl, j = (sums / len(self.table.prompts)).tolist()
        gain = (j - optimum["J_ref"]) / (optimum["J_star"] - optimum["J_ref"])
        return dict(zip(self.KEYS, (reward, kl, j, gain)))
