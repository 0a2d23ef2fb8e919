"""One policy's analysis: the exact grad J on a set of prompts, each sampler's expected DPO gradient
from its own pairs (two independent halves), and how the two compare.

Every policy quantity is exact (enumerated) except the samplers' pair distributions, which are
whatever their `sample()` draws: the DPO gradient is a Monte Carlo average over those pairs, with the
labels replaced by their Bradley-Terry probabilities (exact over the label).
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from pilaf_exp.analysis.expected import (
    PairTerms,
    descent_projection,
    objective_weights,
    pair_terms,
    pair_weights,
    response_index,
)
from pilaf_exp.analysis.tree import directional_derivatives, level_logprobs, sum_levels, weighted_gradients
from pilaf_exp.evaluation.exact import ResponseTable, per_prompt_objective
from pilaf_exp.infra.names import OBJECTIVE
from pilaf_exp.sampling.decoding import DecodeSpec
from pilaf_exp.sampling.samplers import Sampler

HALVES = 2
ANNOTATIONS_PER_PAIR = 2  # the oracle reads both responses of a pair (the paper's Table 1 count)


@dataclass(frozen=True)
class Setting:
    beta: float  # DPO beta (algo.beta), also J's KL weight
    lr: float  # step size of the first-order gain (plain SGD on the per-pair loss)
    batch_size: int  # pairs per batch for the signal-to-noise ratio (algo.batch_size)
    pairs: int  # pairs per prompt in each half
    pairs_for: dict[str, int] = field(default_factory=dict)  # per sampler, where it differs

    def pairs_of(self, name: str) -> int:
        return self.pairs_for.get(name, self.pairs)


def sampler_generator(seed: int, name: str) -> torch.Generator:
    """Each sampler's own random stream: its draws do not depend on which other samplers run."""
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))


def draw(
    sampler: Sampler,
    policy: nn.Module,
    reference: nn.Module,
    table: ResponseTable,
    logp: Tensor,
    spec: DecodeSpec,
    setting: Setting,
    generator: torch.Generator,
    pairs: int,
) -> list[PairTerms]:
    """`pairs` pairs per prompt from the sampler itself, with their exact DPO terms."""
    terms = []
    for i, prompt in enumerate(table.prompts):
        ids = prompt[None].expand(pairs, -1).contiguous()
        batch = sampler.sample(policy, reference, ids, torch.ones_like(ids), spec, generator)
        if not (batch.mask_a.all() and batch.mask_b.all()) or batch.response_a.shape[1] != table.length:
            raise ValueError("the analysis enumerates fixed-length responses: a sampler returned another length")
        index_a, index_b = (response_index(r, table.vocab) for r in (batch.response_a, batch.response_b))
        terms.append(pair_terms(index_a, index_b, logp[i], table.reference_logp[i], table.reward[i], setting.beta))
    return terms


def gradients(
    policy: nn.Module, table: ResponseTable, logp: Tensor, draws: dict[str, list[list[PairTerms]]], beta: float
) -> tuple[Tensor, dict[str, list[Tensor]]]:
    """grad J and, per sampler and half, the expected DPO-loss gradient: means over the prompts, one
    differentiable tree walk per prompt."""
    count, size = len(table.prompts), table.vocab**table.length
    keys = [(name, half) for name, halves in draws.items() for half in range(len(halves))]
    totals: list[Tensor] = []
    for i, prompt in enumerate(table.prompts):
        weights = [objective_weights(logp[i], table.reference_logp[i], table.reward[i], beta) / count]
        weights += [pair_weights(draws[name][half][i], size) / count for name, half in keys]
        grads = weighted_gradients(policy, prompt, weights, table.vocab, table.length)
        totals = grads if not totals else [t + g for t, g in zip(totals, grads)]
    dpo: dict[str, list[Tensor]] = {}
    for (name, _), gradient in zip(keys, totals[1:]):
        dpo.setdefault(name, []).append(gradient)
    return totals[0], dpo


def cosine(u: Tensor, v: Tensor) -> float:
    return float(u @ v / (u.norm() * v.norm()))


def snr(mean: Tensor, second: Tensor, batch: int) -> float:
    """Mean projection of a batch gradient over its standard deviation across batches of `batch` pairs."""
    variance = float(second.mean() - mean.mean() ** 2)
    return float(mean.mean()) / math.sqrt(variance / batch) if variance > 0 else math.nan


def projections(terms: list[PairTerms], along: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """Per-pair projections on unit grad J over every prompt: (expected-label mean, sampled-label second moment)."""
    parts = [descent_projection(t, along[i], beta) for i, t in enumerate(terms)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def compare(
    grad_j: Tensor, halves: list[Tensor], terms: list[list[PairTerms]], along: Tensor, setting: Setting
) -> dict[str, float | list[float]]:
    """One sampler against grad J: cosine, first-order gain per annotation, signal-to-noise; each
    per half and pooled. `along` = [N, V^T] derivatives of log pi along grad J / |grad J|."""
    descent = [-g for g in halves]  # the DPO step direction is minus the loss gradient
    pooled = sum(descent) / len(descent)
    norm_j = float(grad_j.norm())
    moments = [projections(t, along, setting.beta) for t in terms]
    mean = torch.cat([m for m, _ in moments])
    second = torch.cat([s for _, s in moments])
    cosines = [cosine(d, grad_j) for d in descent]
    signal = float(descent[0] @ descent[1])  # unbiased |E descent|^2: the halves are independent
    gain = setting.lr * norm_j / ANNOTATIONS_PER_PAIR  # x projection on unit grad J
    projection = float(pooled @ grad_j) / norm_j
    return {
        "cosine": cosine(pooled, grad_j),
        "cosine_halves": cosines,
        "cosine_mc_error": abs(cosines[0] - cosines[1]) / 2,  # standard error of the mean of two halves
        "cosine_debiased": projection / math.sqrt(signal) if signal > 0 else math.nan,
        "noise_share": 1 - signal / float(pooled @ pooled),  # share of |pooled|^2 that is Monte Carlo noise
        "projection": projection,
        "projection_se": float(mean.std() / math.sqrt(len(mean))),
        "projection_check": float(mean.mean()) - projection,  # per-pair (forward mode) vs the vectors: ~0
        "gain_per_annotation": gain * projection,
        "gain_per_annotation_se": gain * float(mean.std() / math.sqrt(len(mean))),
        "gain_halves": [gain * float(m.mean()) for m, _ in moments],
        "snr": snr(mean, second, setting.batch_size),
        "snr_halves": [snr(m, s, setting.batch_size) for m, s in moments],
        "snr_expected_label": snr(mean, mean**2, setting.batch_size),
        "descent_norm": float(pooled.norm()),
        "pairs": len(mean),
    }


def mass(logp: Tensor) -> dict[str, float]:
    """How spread the policy is over the responses of a prompt (means over the prompts): its entropy, and
    how many responses hold all but 1e-2 and all but 1e-4 of its mass (what a truncated sum would keep)."""
    p = logp.double().exp().sort(dim=-1, descending=True).values
    kept = {
        f"responses_for_1-{eps:g}": float(((p.cumsum(-1) < 1 - eps).sum(-1) + 1).double().mean())
        for eps in (1e-2, 1e-4)
    }
    return {"entropy": float(-(p * p.log()).nan_to_num().sum(-1).mean()), **kept}


def objective(logp: Tensor, table: ResponseTable, beta: float) -> dict[str, float]:
    """Exact reward, KL and J of the policy whose [N, V^T] log-probs are `logp`, means over the table's prompts."""
    values = per_prompt_objective(logp, table.reference_logp, table.reward, beta).mean(0)
    return dict(zip(OBJECTIVE, values.tolist()))


def analyse(
    policy: nn.Module,
    reference: nn.Module,
    table: ResponseTable,
    samplers: dict[str, Sampler],
    spec: DecodeSpec,
    setting: Setting,
    seed: int,
) -> dict:
    """Everything the analysis reports for one policy (trainable parameters: all of them)."""
    policy = policy.eval().requires_grad_(True)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    with torch.no_grad():
        logp = torch.stack([sum_levels(level_logprobs(policy, p, table.vocab, table.length)) for p in table.prompts])
    draws = {}
    for name, sampler in samplers.items():
        generator, began = sampler_generator(seed, name), time.perf_counter()
        pairs = setting.pairs_of(name)
        draws[name] = [
            draw(sampler, policy, reference, table, logp, spec, setting, generator, pairs) for _ in range(HALVES)
        ]
        seconds[f"sampling/{name}"] = time.perf_counter() - began
    seconds["sampling"], began = time.perf_counter() - started, time.perf_counter()
    grad_j, dpo = gradients(policy, table, logp, draws, setting.beta)
    seconds["gradients"], began = time.perf_counter() - began, time.perf_counter()
    along = directional_derivatives(policy, table.prompts, grad_j, table.vocab, table.length)
    seconds["directional"] = time.perf_counter() - began
    return {
        "objective": objective(logp, table, setting.beta),
        "grad_J_norm": float(grad_j.norm()),
        "mass": mass(logp),
        "vocab": table.vocab,
        "length": table.length,
        "parameters": len(grad_j),
        "samplers": {name: compare(grad_j, dpo[name], draws[name], along, setting) for name in samplers},
        "seconds": seconds,
    }
