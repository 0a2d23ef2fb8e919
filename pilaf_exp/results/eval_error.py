"""The primary endpoint's evaluation error, prompt choice included (docs/results/protocol.yaml, rule 5):
for each pilot run's final policy (`save_policy=true`), the exact gain J_i - J_i(pi_ref) on each of the
first `--prompts` test prompts; its standard error over prompts is how far the run's exact J could move
had other prompts of the task been drawn. Compared with the between-seed sd of the chosen endpoint.

    python -m pilaf_exp.results.eval_error --runs results/runs/pilot/<candidate> [--prompts 16]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from pilaf_exp.build import build_world, response_table
from pilaf_exp.evaluation.exact import ResponseTable, per_prompt_objective, response_logprobs


def per_prompt_gain(policy: torch.nn.Module, table: ResponseTable, beta: float) -> np.ndarray:
    """[N] exact J_i(policy) - J_i(pi_ref) on each of the table's prompts."""
    gains = []
    with torch.no_grad():
        for i, prompt in enumerate(table.prompts):
            logp = response_logprobs(policy, prompt, table.vocab, table.length, table.temperature)
            j = per_prompt_objective(logp, table.reference_logp[i], table.reward[i], beta)[2]
            j_ref = (table.reference_logp[i].double().exp() * table.reward[i].double()).sum()
            gains.append(float(j - j_ref))
    return np.array(gains)


def run_error(run_dir: Path, prompts: int) -> dict[str, float]:
    """One run's mean exact gain over the prompts, the sd over prompts and its standard error."""
    cfg = OmegaConf.load(run_dir / "config_resolved.yaml")
    cfg.eval.exact_prompts = prompts
    table = response_table(cfg, build_world(cfg))
    policy = AutoModelForCausalLM.from_pretrained(run_dir / "policy").eval()
    gains = per_prompt_gain(policy, table, float(cfg.algo.beta))
    sd = float(gains.std(ddof=1))
    return {
        "run": run_dir.name,
        "prompts": prompts,
        "mean gain": float(gains.mean()),
        "sd over prompts": sd,
        "standard error": sd / math.sqrt(prompts),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True, help="one candidate's pilot sweep directory")
    parser.add_argument("--prompts", type=int, default=16, help="exact prompts (the first N test prompts)")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write (default: <runs>/eval_error.json)")
    args = parser.parse_args(argv)
    run_dirs = sorted(p.parent.parent for p in args.runs.rglob("policy/config.json"))
    if not run_dirs:
        print(
            f"error: no saved policies (policy/config.json) under {args.runs}; run with save_policy=true",
            file=sys.stderr,
        )
        sys.exit(2)
    rows = [run_error(d, args.prompts) for d in run_dirs]
    errors = [r["standard error"] for r in rows]
    result = {"runs": rows, "median standard error": float(np.median(errors))}
    (args.out or args.runs / "eval_error.json").write_text(json.dumps(result, indent=2))
    for row in rows:
        print(row)
    print(f"median standard error over prompts: {result['median standard error']:.4f}")


if __name__ == "__main__":
    main()
