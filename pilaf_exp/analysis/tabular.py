"""The paper's optimisation theorem in closed form, on tabular softmax policies: one logit per response
of a prompt (pi = softmax(theta)), no transformer, so every gradient is a finite sum.

For a pair distribution P(a, b) and Bradley-Terry labels from r*, the expected DPO loss has gradient

    g = sum_ab P(a, b) c(a, b) (e_a - e_b),   c = beta (sigma(m_ab) - sigma(r*_a - r*_b)),
    m_ab = r_theta(a) - r_theta(b),           r_theta = beta log(pi / pi_ref)

(the e_a - e_b is grad log pi(a) - grad log pi(b) for softmax logits), and the objective
J = E_pi[r*] - beta KL(pi || pi_ref) has grad J = pi * (A - E_pi A), A = r* - r_theta. The theorem
linearises sigma(r*_a - r*_b) around m_ab: c ~ beta sigma'(m)(m - Delta r*). T-PILAF draws with
probability s a pair (pi+, pi-), pi+- ∝ pi exp(+-r_theta) (interpolation coefficient = beta), else a
vanilla pair; symmetrised, its pair weight relative to vanilla's is (1 - s) + s cosh(m) / (Z+ Z-),
Z+- = E_pi exp(+-r_theta). With s = Z+ Z- / (1 + Z+ Z-) ("exact share", `theory.theorem_share`) the
weight times sigma'(m) is a constant, so the linearised T-PILAF gradient is exactly proportional to
-grad J; with vanilla (weight 1) it is only where m hardly varies. Measured: the cosine of -g (exact c)
with grad J per sampler; predicted: the same with the linearised c.

Policies: along the path pi_t ∝ pi_ref^(1-t) pi*^t to pi* ∝ pi_ref exp(r*/beta), and off it (log pi_t
plus `off` x standard normal noise). Pairs are summed over a support: the responses that carry the most
mass under any of the policies examined (`top` per policy); the table states the mass it covers.

    python -m pilaf_exp.analysis.tabular [--prompts 8] [--betas 0.1 1] [--out DIR] [hydra overrides]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from pilaf_exp.analysis.theory import interpolated_logprobs, partition_product, theorem_share
from pilaf_exp.report.markdown import markdown

SAMPLERS = ("vanilla", "t_pilaf_half", "t_pilaf_exact")
ZERO = 1e-10  # a gradient norm below this is float noise (grad J vanishes at pi*)


def path_logp(reference_logp: Tensor, reward: Tensor, beta: float, t: float) -> Tensor:
    """[N] log pi_t, pi_t ∝ pi_ref^(1-t) pi*^t = pi_ref exp(t r* / beta) (float64, normalised)."""
    logits = reference_logp.double() + t * reward.double() / beta
    return logits - logits.logsumexp(0)


def objective_gradient(logp: Tensor, reference_logp: Tensor, reward: Tensor, beta: float) -> Tensor:
    """[N] grad J with respect to the logits: pi (A - E_pi A), A = r* - beta log(pi / pi_ref)."""
    pi = logp.exp()
    advantage = reward - beta * (logp - reference_logp)
    return pi * (advantage - (pi * advantage).sum())


@dataclass
class PairWorld:
    """One policy on a support of K responses (all [K], float64; pi is not renormalised on the support:
    the pairs outside it are left out, and the table states the mass it keeps)."""

    logp: Tensor  # log pi
    reference_logp: Tensor  # log pi_ref
    reward: Tensor  # r*
    beta: float

    @property
    def implicit(self) -> Tensor:
        """r_theta = beta log(pi / pi_ref)."""
        return self.beta * (self.logp - self.reference_logp)

    def margins(self) -> tuple[Tensor, Tensor]:
        """[K, K] m_ab = r_theta(a) - r_theta(b) and Delta r*_ab."""
        return self.implicit[:, None] - self.implicit[None, :], self.reward[:, None] - self.reward[None, :]


def pair_probability(world: PairWorld, sampler: str) -> Tensor:
    """[K, K] P(a, b) of an ordered pair under `sampler` (one of SAMPLERS); T-PILAF's pi+- and share are
    the gradient analysis's (`theory`), at interpolation coefficient beta."""
    pi = world.logp.exp()
    vanilla = pi[:, None] * pi[None, :]
    if sampler == "vanilla":
        return vanilla
    plus, minus = interpolated_logprobs(world.logp, world.reference_logp, world.beta)
    share = {"t_pilaf_half": 0.5, "t_pilaf_exact": None}[sampler]
    if share is None:
        share = theorem_share(world.logp, world.reference_logp, world.beta)
    return (1.0 - share) * vanilla + share * plus.exp()[:, None] * minus.exp()[None, :]


def dpo_gradient(world: PairWorld, probability: Tensor, linearised: bool) -> Tensor:
    """[K] gradient of the expected DPO loss over the pairs: sum_b (P(a,b) + P(b,a)) c(a,b), c antisymmetric."""
    margin, reward_gap = world.margins()
    if linearised:
        coefficient = world.beta * torch.sigmoid(margin) * torch.sigmoid(-margin) * (margin - reward_gap)
    else:
        coefficient = world.beta * (torch.sigmoid(margin) - torch.sigmoid(reward_gap))
    return ((probability + probability.T) * coefficient).sum(1)


def cosine(u: Tensor, v: Tensor) -> float:
    """nan where either vector is numerically zero (grad J at the optimum has no direction)."""
    if float(u.norm()) < ZERO or float(v.norm()) < ZERO:
        return math.nan
    return float(u @ v) / float(u.norm() * v.norm())


def weighted_sd(values: Tensor, weights: Tensor) -> float:
    weights = weights / weights.sum()
    mean = (weights * values).sum()
    return float((weights * (values - mean) ** 2).sum().sqrt())


def descent_directions(world: PairWorld) -> dict[str, Tensor]:
    """[K] weights over the world's responses: grad J ("grad J") and, per sampler, the expected DPO descent
    direction, measured (exact c) and predicted (linearised c). Each is the gradient in the softmax logits,
    and the weights `tree.weighted_gradients` turns into the network's parameters."""
    directions = {"grad J": objective_gradient(world.logp, world.reference_logp, world.reward, world.beta)}
    for sampler in SAMPLERS:
        probability = pair_probability(world, sampler)
        directions[f"{sampler} measured"] = -dpo_gradient(world, probability, linearised=False)
        directions[f"{sampler} predicted"] = -dpo_gradient(world, probability, linearised=True)
    return directions


def world_row(world: PairWorld, directions: dict[str, Tensor]) -> dict[str, float]:
    """The theorem's quantities of a world and each direction's cosine with grad J (in the logits)."""
    pi = world.logp.exp()
    row = {
        "sd r_theta": weighted_sd(world.implicit, pi),
        "sd r* - r_theta": weighted_sd(world.reward - world.implicit, pi),
        "Z+ Z-": partition_product(world.logp, world.reference_logp, world.beta),
    }
    return row | {name: cosine(d, directions["grad J"]) for name, d in directions.items() if name != "grad J"}


def measure(logp: Tensor, reference_logp: Tensor, reward: Tensor, beta: float) -> dict[str, float]:
    """One policy ([K] log pi of a normalised world): the theorem's quantities and, per sampler, the cosine
    with grad J of the expected DPO descent direction, measured (exact c) and predicted (linearised c)."""
    world = PairWorld(logp.double(), reference_logp.double(), reward.double(), beta)
    return world_row(world, descent_directions(world))


def with_gaps(values: pd.DataFrame | pd.Series, kinds: tuple[str, ...]) -> pd.DataFrame | pd.Series:
    """`values` (columns or index named '<sampler> <kind>') with each T-PILAF variant's gap to vanilla added
    for every kind present."""
    for sampler in SAMPLERS[1:]:
        for kind in kinds:
            if f"{sampler} {kind}" in values:
                values[f"{sampler} - vanilla {kind}"] = values[f"{sampler} {kind}"] - values[f"vanilla {kind}"]
    return values


def support_of(policies: list[Tensor], top: int) -> Tensor:
    """Indices of the responses among the `top` most likely under any of `policies` ([N] log-probs)."""
    chosen = torch.cat([logp.topk(min(top, len(logp))).indices for logp in policies])
    return torch.unique(chosen)


def cell_policy(reference_logp: Tensor, reward: Tensor, noise: Tensor, beta: float, t: float, off: float) -> Tensor:
    """log pi_t plus `off` x noise, normalised over the responses given."""
    return (path_logp(reference_logp, reward, beta, t) + off * noise).log_softmax(0)


def prompt_rows(
    reference_logp: Tensor, reward: Tensor, betas: list[float], ts: list[float], offs: list[float], top: int, seed: int
) -> list[dict]:
    """Every (beta, t, off) cell for one prompt's [N] tables. The pairs are summed over a support S (the
    `top` likeliest responses of every cell's policy on the full table), and the world is restricted to it:
    pi_ref renormalised on S and every policy built on S, so each sum is exact for that world; 'support
    mass' is the mass the cell's full-table policy puts on S. The off-path noise is drawn once per prompt."""
    noise = torch.randn(len(reward), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    reference_logp, reward = reference_logp.double(), reward.double()
    cells = [(t, off) for t in ts for off in offs]
    rows = []
    for beta in betas:
        full = {cell: cell_policy(reference_logp, reward, noise, beta, *cell) for cell in cells}
        support = support_of(list(full.values()), top)
        restricted = reference_logp[support].log_softmax(0)
        for (t, off), logp in full.items():
            policy = cell_policy(restricted, reward[support], noise[support], beta, t, off)
            row = {
                "beta": beta,
                "t": t,
                "off": off,
                "support": len(support),
                "support mass": float(logp[support].exp().sum()),
            }
            rows.append(row | measure(policy, restricted, reward[support], beta))
    return rows


def world_tables(overrides: list[str], prompts: int) -> tuple[Tensor, Tensor]:
    """[n, N] log pi_ref and r* of the first `prompts` test prompts of the configured task (the exact
    evaluation's cached response table)."""
    from pilaf_exp.build import build_world, response_table  # the model stack, only for the real tables
    from pilaf_exp.infra.cli import compose_config

    cfg = compose_config(*overrides, f"eval.exact_prompts={prompts}")
    table = response_table(cfg, build_world(cfg))
    if table is None:
        raise SystemExit("error: the configured task cannot be enumerated: the tabular check needs task=embedded")
    return table.reference_logp, table.reward


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean over prompts per (beta, t, off) cell, and the predicted and measured T-PILAF - vanilla gaps."""
    cells = rows.drop(columns=["prompt"]).groupby(["beta", "t", "off"], sort=False).mean()
    return with_gaps(cells, ("predicted", "measured"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8, help="the first N test prompts")
    parser.add_argument("--betas", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--t", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 0.9, 0.97])
    parser.add_argument("--off", type=float, nargs="+", default=[0.0, 1.0], help="off-path noise (nats of log pi)")
    parser.add_argument("--top", type=int, default=256, help="responses per policy in the pair support")
    parser.add_argument("--out", type=Path, default=Path("tabular"))
    parser.add_argument("overrides", nargs="*", help="hydra overrides choosing the task and oracle")
    args = parser.parse_args(argv)
    reference_logp, reward = world_tables(args.overrides, args.prompts)
    rows = []
    for i in range(len(reward)):
        cells = prompt_rows(reference_logp[i], reward[i], args.betas, args.t, args.off, args.top, seed=i)
        rows += [{"prompt": i} | cell for cell in cells]
    args.out.mkdir(parents=True, exist_ok=True)
    per_prompt = pd.DataFrame(rows)
    per_prompt.to_csv(args.out / "tabular_per_prompt.csv", index=False)
    cells = summary(per_prompt)
    cells.to_csv(args.out / "tabular.csv")
    (args.out / "tabular.md").write_text(markdown(cells.round(4).reset_index()))
    print(cells.round(4).to_string())


if __name__ == "__main__":
    main()
