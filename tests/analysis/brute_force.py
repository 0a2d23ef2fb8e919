"""A task small enough to brute-force (3 tokens, prompts of 2, responses of 4: 81 responses a prompt):
float64 tiny models, every response's log-probability by full-sequence forwards, exact J, and the
closed-form expected DPO gradient of a pair distribution. The gradient analysis is checked against these."""

from __future__ import annotations

import copy

import torch

from pilaf_exp.analysis.expected import pair_terms, pair_weights
from pilaf_exp.analysis.tree import weighted_gradients
from pilaf_exp.evaluation.exact import all_sequences
from pilaf_exp.models.builders import tiny_llama
from pilaf_exp.training.dpo import dpo_loss

VOCAB, LENGTH, BETA = 3, 4, 0.5
SIZE = VOCAB**LENGTH
PROMPTS = torch.tensor([[2, 0], [1, 1]])


class Float64RMSNorm(torch.nn.Module):
    """LlamaRMSNorm without its float32 round trip, so a float64 model is float64 throughout and
    central differences of it are accurate to ~1e-9."""

    def __init__(self, norm: torch.nn.Module) -> None:
        super().__init__()
        self.weight, self.eps = norm.weight, norm.variance_epsilon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


def tiny(seed: int) -> torch.nn.Module:
    model = tiny_llama(VOCAB, hidden_size=16, num_layers=1, num_heads=2, seed=seed)
    with torch.no_grad():  # distinct, non-uniform next-token distributions
        model.lm_head.weight.mul_(30)
    for name, module in list(model.named_modules()):
        if type(module).__name__ == "LlamaRMSNorm":
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, Float64RMSNorm(module))
    return model.double().eval()


def full_logprobs(model, prompt) -> torch.Tensor:
    """log pi(y|x) of every response by full-sequence forwards, in the model's precision: [SIZE]."""
    responses = all_sequences(VOCAB, LENGTH)
    inputs = torch.cat([prompt[None].expand(SIZE, -1), responses], dim=1)
    logits = model(input_ids=inputs).logits[:, len(prompt) - 1 : -1]
    return torch.log_softmax(logits, -1).gather(-1, responses[..., None]).squeeze(-1).sum(-1)


def exact_j(policy, reference, table) -> torch.Tensor:
    """J = mean_x sum_y pi (r - beta (log pi - log pi_ref)), from full-sequence forwards."""
    values = []
    for i, prompt in enumerate(table.prompts):
        logp = full_logprobs(policy, prompt)
        values.append((logp.exp() * (table.reward[i].double() - BETA * (logp - table.reference_logp[i]))).sum())
    return torch.stack(values).mean()


def flat_grad(value, model) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, list(model.parameters()), retain_graph=True)])


def with_offset(model, direction: torch.Tensor):
    twin = copy.deepcopy(model)
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(
            torch.nn.utils.parameters_to_vector(twin.parameters()) + direction, twin.parameters()
        )
    return twin


def pair_distribution(kind: str, logp: torch.Tensor, reference_logp: torch.Tensor) -> torch.Tensor:
    """[SIZE * SIZE] P(a, b) (row a * SIZE + b) of vanilla (pi x pi), hybrid (pi x pi_ref) or T-PILAF
    (1/2 pi x pi + 1/2 pi_plus x pi_minus, sequence-level interpolation with coef = BETA)."""
    product = lambda la, lb: (la[:, None] + lb[None, :]).exp().flatten()  # noqa: E731
    if kind == "t_pilaf":
        plus = torch.log_softmax((1 + BETA) * logp - BETA * reference_logp, 0)  # pi^(1+c) pi_ref^(-c), normalised
        minus = torch.log_softmax((1 - BETA) * logp + BETA * reference_logp, 0)
        return 0.5 * product(logp, logp) + 0.5 * product(plus, minus)
    return product(logp, logp if kind == "vanilla" else reference_logp)


def all_pairs(kind: str, logp: torch.Tensor, reference_logp: torch.Tensor):
    """Every (a, b): rows of a, rows of b, P(a, b)."""
    a, b = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    return a.flatten(), b.flatten(), pair_distribution(kind, logp.double(), reference_logp.double())


def closed_form_independent(policy, reference, table, kind: str) -> torch.Tensor:
    """Autograd of sum_(a,b) P(a,b) [s L(a>b) + (1-s) L(b>a)] with `dpo_loss`, over every pair."""
    total = 0.0
    for i, prompt in enumerate(table.prompts):
        logp = full_logprobs(policy, prompt)
        a, b, prob = all_pairs(kind, logp.detach(), table.reference_logp[i])
        ref, reward = table.reference_logp[i], table.reward[i].double()
        s = torch.sigmoid(reward[a] - reward[b])
        mean_loss, margin = dpo_loss(logp[a], logp[b], ref[a], ref[b], BETA)  # a chosen, b rejected
        a_chosen, b_chosen = -torch.nn.functional.logsigmoid(margin), -torch.nn.functional.logsigmoid(-margin)
        torch.testing.assert_close(a_chosen.mean(), mean_loss)  # the per-pair losses dpo_loss averages
        torch.testing.assert_close(b_chosen.mean(), dpo_loss(logp[b], logp[a], ref[b], ref[a], BETA)[0])
        loss = s * a_chosen + (1 - s) * b_chosen
        total = total + (prob * loss).sum() / len(table.prompts)
    return flat_grad(total, policy)


def closed_form(policy, table, kind: str) -> torch.Tensor:
    """The analysis's exact expected DPO gradient for a pair distribution (`pair_distribution`)."""
    total = torch.zeros(sum(p.numel() for p in policy.parameters()), dtype=torch.float64)
    for i, prompt in enumerate(table.prompts):
        logp = full_logprobs(policy, prompt).detach()
        a, b, prob = all_pairs(kind, logp, table.reference_logp[i])
        terms = pair_terms(a, b, logp, table.reference_logp[i], table.reward[i], BETA)
        [g] = weighted_gradients(policy, prompt, [pair_weights(terms, SIZE, prob) / len(PROMPTS)], VOCAB, LENGTH)
        total += g
    return total
