"""The two gradients compared, as weights over responses (what `tree.weighted_gradients` turns into
parameter-space vectors), and the per-pair terms of the DPO gradient along grad J.

Oracle objective, one prompt: J = sum_y pi(y) [r(y) - beta (log pi(y) - log pi_ref(y))], so
    grad J = sum_y pi(y) A(y) grad log pi(y),   A = r - beta (log pi - log pi_ref)
(the -beta sum_y pi grad log pi term is zero). Expected DPO loss of a pair (a, b) under
Bradley-Terry labels, s = sigma(r(a) - r(b)), m = beta [(log pi - log pi_ref)(a) - (same)(b)]:
    E L = s * -log sigma(m) + (1 - s) * -log sigma(-m),
    grad E L = c (grad log pi(a) - grad log pi(b)),   c = beta (sigma(m) - s).
With a sampled label the pair's gradient is -beta sigma(-m) (grad a - grad b) when a wins (prob s)
and beta sigma(m) (grad a - grad b) when b wins: its second moment along a direction is exact too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def objective_weights(logp: Tensor, reference_logp: Tensor, reward: Tensor, beta: float) -> Tensor:
    """pi(y) A(y) (float64, same shape as the inputs): grad J = sum_y pi A grad log pi."""
    logp = logp.double()
    return logp.exp() * (reward.double() - beta * (logp - reference_logp.double()))


def response_index(tokens: Tensor, vocab: int) -> Tensor:
    """[B, T] responses -> [B] their rows in `all_sequences(vocab, T)` (last position fastest)."""
    powers = vocab ** torch.arange(tokens.shape[1] - 1, -1, -1, device=tokens.device)
    return (tokens.long() * powers).sum(-1)


@dataclass
class PairTerms:
    """One prompt's sampled pairs and their exact DPO terms (all [n], float64)."""

    index_a: Tensor
    index_b: Tensor
    coef: Tensor  # c: the expected loss's gradient is c (grad log pi(a) - grad log pi(b))
    a_wins: Tensor  # s = sigma(r(a) - r(b)): Bradley-Terry probability that a is preferred
    margin: Tensor  # m: the DPO implicit-reward margin of (a, b)

    def __len__(self) -> int:
        return len(self.coef)


def pair_terms(index_a: Tensor, index_b: Tensor, logp: Tensor, reference_logp: Tensor, reward: Tensor, beta: float):
    """PairTerms of pairs given by response rows, from one prompt's exact [V^T] tables."""
    implicit = beta * (logp.double() - reference_logp.double())
    margin = implicit[index_a] - implicit[index_b]
    a_wins = torch.sigmoid(reward.double()[index_a] - reward.double()[index_b])
    return PairTerms(index_a, index_b, beta * (torch.sigmoid(margin) - a_wins), a_wins, margin)


def pair_weights(terms: PairTerms, size: int, probability: Tensor | None = None) -> Tensor:
    """[size] weights over responses whose weighted gradient is the expected-loss gradient averaged
    over the pairs (equal shares, or each pair's `probability` for an exact sum over a pair distribution)."""
    share = terms.coef * (probability.double() if probability is not None else 1.0 / len(terms))
    weights = torch.zeros(size, dtype=torch.float64)
    weights.index_add_(0, terms.index_a, share)
    weights.index_add_(0, terms.index_b, -share)
    return weights


def descent_projection(terms: PairTerms, along: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """Per pair, the negative loss gradient projected on a direction, given `along` = [V^T] the
    derivative of log pi(y) along it: the mean over the label (expected-label gradient) and the
    second moment with a Bradley-Terry sampled label, as in training."""
    d = along.double()[terms.index_a] - along.double()[terms.index_b]
    mean = -terms.coef * d
    s, m = terms.a_wins, terms.margin
    second = (beta * d) ** 2 * (s * torch.sigmoid(-m) ** 2 + (1 - s) * torch.sigmoid(m) ** 2)
    return mean, second
