"""The theorem's quantities at a trained policy: the closed-form check of `tabular` applied to a checkpoint's
own exact response table instead of a policy built on the path pi_ref -> pi*.

Per test prompt: log pi of every response (an exact walk of the checkpoint), the pairs restricted to the
`top` likeliest responses of pi (pi and pi_ref renormalised on them: every sum exact for that world, and the
mass pi puts on them reported), then `tabular.measure`: the sd of r_theta and of r* - r_theta under pi,
Z+ Z-, and per sampler the cosine of the expected DPO descent direction with grad J, measured (exact
Bradley-Terry terms) and predicted (the theorem's linearisation). The same comparison is made in the
network's own parameters ("(params)"): each sampler's expected DPO gradient and grad J are weights over the
same responses (all pairs of the support, each sampler's pair probabilities exact), turned into parameter
vectors by one backward each (`tree.weighted_gradients`): no pair is sampled, so a difference between
samplers carries no sampling noise.

    python -m pilaf_exp.analysis.checkpoint_theory CHECKPOINT [--prompts 4] [--top 512]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from pilaf_exp.analysis.tabular import PairWorld, cosine, descent_directions, support_of, with_gaps, world_row
from pilaf_exp.analysis.tree import weighted_gradients
from pilaf_exp.evaluation.exact import ResponseTable, response_logprobs


@torch.no_grad()
def policy_rows(policy: torch.nn.Module, table: ResponseTable, beta: float, top: int) -> list[dict]:
    """One row per prompt of `table`: the theorem's quantities at `policy`."""
    rows = []
    for i, prompt in enumerate(table.prompts):
        logp = response_logprobs(policy, prompt, table.vocab, table.length, table.temperature).double()  # [V^T]
        support = support_of([logp], top)
        world = PairWorld(
            logp[support].log_softmax(0),
            table.reference_logp[i][support].double().log_softmax(0),
            table.reward[i][support].double(),
            beta,
        )
        directions = descent_directions(world)  # one set of weights: per response and in the parameters
        row = {"prompt": i, "support mass": float(logp[support].exp().sum())} | world_row(world, directions)
        rows.append(row | parameter_cosines(policy, prompt, support, directions, table))
    return rows


def parameter_cosines(policy: torch.nn.Module, prompt, support, directions: dict, table: ResponseTable) -> dict:
    """Per sampler, the cosine with grad J of its expected DPO descent direction in the policy's parameters
    (measured and predicted), from the exact weights over the support's responses ([K] each, zero elsewhere)."""
    live = {
        name: weights for name, weights in directions.items() if bool(weights.abs().max() > 0)
    }  # zero: no direction
    full = []
    for weights in live.values():
        dense = torch.zeros(table.vocab**table.length, dtype=torch.float64)
        dense[support] = weights
        full.append(dense)
    with torch.enable_grad():
        gradients = dict(zip(live, weighted_gradients(policy, prompt, full, table.vocab, table.length)))
    zero = torch.zeros(1, dtype=torch.float64)  # cosine() says nan for a numerically zero vector
    grad_j = gradients.get("grad J", zero)
    return {f"{name} (params)": cosine(gradients.get(name, zero), grad_j) for name in directions if name != "grad J"}


def gaps(rows: pd.DataFrame) -> pd.Series:
    """Mean over prompts, with each T-PILAF variant's gap to vanilla (predicted and measured)."""
    kinds = ("predicted", "measured", "predicted (params)", "measured (params)")
    return with_gaps(rows.drop(columns=["prompt"]).mean(), kinds)


def checkpoint_quantities(checkpoint: Path, run_config: DictConfig, prompts: int, top: int) -> pd.Series:
    """The theorem's quantities of a run's checkpoint, in the world its resolved config builds (the exact
    table of its first `prompts` test prompts)."""
    from pilaf_exp.analysis.inputs import load_policy  # the model stack, only when a checkpoint is read
    from pilaf_exp.build import build_world, response_table
    from pilaf_exp.infra.cli import compose_config

    # this machine's cache (SFT reference, exact tables), not the one the run recorded
    here = {"eval": {"exact_prompts": prompts}, "cache_dir": str(compose_config().cache_dir)}
    cfg = OmegaConf.merge(run_config, here)
    world = build_world(cfg)
    table = response_table(cfg, world)
    if table is None:
        raise SystemExit("error: the run's task cannot be enumerated: the theorem's quantities need task=embedded")
    policy = load_policy(checkpoint, world.reference).model.eval().requires_grad_(True)
    return gaps(pd.DataFrame(policy_rows(policy, table, float(cfg.algo.beta), top)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a run's checkpoints/step_*.ckpt (its config beside the run)")
    parser.add_argument("--config", type=Path, help="the run's config_resolved.yaml (default: the run's own)")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--top", type=int, default=512)
    args = parser.parse_args(argv)
    config = args.config or args.checkpoint.parent.parent / "config_resolved.yaml"
    if not config.is_file():
        raise SystemExit(f"error: no resolved config at {config}: pass --config")
    print(checkpoint_quantities(args.checkpoint, OmegaConf.load(config), args.prompts, args.top).round(4).to_string())


if __name__ == "__main__":
    main()
