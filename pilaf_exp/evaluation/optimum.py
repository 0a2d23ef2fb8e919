"""The exact optimum of the KL-regularised objective on an enumerable task.

For one prompt x, J*(x) = max_pi E_pi[r*] - beta KL(pi || pi_ref) = beta * log E_{y~pi_ref} exp(r*(x,y)/beta),
attained by pi*(y|x) ∝ pi_ref(y|x) exp(r*(x,y)/beta). On the embedded task every response can
be listed, so both the sum and the reference's own J (= E_ref r*, its KL being 0) are exact.

Enumeration walks the response tree one level short of the leaves: a forward over each of the
V^(T-1) prefixes gives the reference's log-probs of all V children at once, and the oracle
scores the V children of a prefix from that prefix's KV cache, so neither model reads the
V^T full sequences.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from pilaf_exp.labelling.oracle import RewardOracle
from pilaf_exp.sampling.engines import cache_argument


def all_sequences(vocab: int, length: int) -> Tensor:
    """[vocab**length, length] every token sequence, last position varying fastest."""
    return torch.tensor(list(itertools.product(range(vocab), repeat=length)), dtype=torch.long).view(-1, length)


@torch.no_grad()
def enumerate_responses(
    reference: nn.Module, oracle: RewardOracle, prompt: Tensor, vocab: int, length: int, chunk: int = 2048
) -> tuple[Tensor, Tensor]:
    """log pi_ref(y|x) and r*(x, y) for every response y of one prompt ([P]): two [vocab**length] tensors,
    in the order of `all_sequences(vocab, length)`."""
    prefixes = all_sequences(vocab, length - 1)  # [V^(T-1), T-1]
    children = torch.arange(vocab)
    logps, rewards = [], []
    for start in range(0, len(prefixes), chunk):
        prefix = prefixes[start : start + chunk]
        count = len(prefix)
        inputs = torch.cat([prompt.expand(count, -1), prefix], dim=1)  # [c, P + T - 1]
        # Reference: log-prob of the prefix tokens, plus the next-token log-probs of every child.
        logp = torch.log_softmax(reference(input_ids=inputs).logits.float(), dim=-1)  # [c, P+T-1, V]
        prompt_len = prompt.shape[0]
        prefix_logp = logp[:, prompt_len - 1 : -1].gather(-1, prefix[..., None]).sum((1, 2))  # [c]
        logps.append((prefix_logp[:, None] + logp[:, -1]).flatten())  # [c * V]
        # Oracle: run the prefix once, then score all V one-token extensions from its cache.
        cache = DynamicCache()
        oracle.model(input_ids=inputs, use_cache=True, **{cache_argument(oracle.model): cache})
        cache.batch_repeat_interleave(vocab)
        last = oracle.model(
            input_ids=children.repeat(count)[:, None],
            position_ids=torch.full((count * vocab, 1), inputs.shape[1]),
            **{cache_argument(oracle.model): cache},
        ).logits[:, 0]
        rewards.append((last.float() - oracle.shift) * oracle.scale)
    return torch.cat(logps), torch.cat(rewards)


def optimum(
    reference: nn.Module, oracle: RewardOracle, prompts: Tensor, vocab: int, length: int, beta: float
) -> dict[str, float]:
    """Mean over prompts ([N, P]) of J*(x) and of J(pi_ref)(x) = E_ref r*(x, y)."""
    j_star, j_ref = [], []
    for prompt in prompts:
        logp, reward = enumerate_responses(reference, oracle, prompt, vocab, length)
        j_star.append(beta * torch.logsumexp(logp + reward / beta, dim=0))
        j_ref.append((logp.exp() * reward).sum())
    return {
        "optimum/J_star": torch.stack(j_star).mean().item(),
        "optimum/J_ref": torch.stack(j_ref).mean().item(),
        "optimum/prompts": len(prompts),
    }
