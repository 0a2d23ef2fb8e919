"""The protocol's pilot: vanilla-only runs of every stabiliser candidate in `docs/results/protocol.yaml`
on the pilot seeds, and the rule written there applied to them.

    python -m pilaf_exp.results.pilot run --runs results/runs/pilot [--jobs 2]
    python -m pilaf_exp.results.pilot choose --runs results/runs/pilot   # prints the rule's tables, writes `chosen:`
    ... --protocol docs/results/protocol_fig4_overfitted.yaml            # another claim's own protocol

`choose` rewrites only the `chosen:` block at the end of the protocol file (everything above it is
the rule, committed before the pilot ran).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pilaf_exp.report.decide import minimum_detectable, seeds_needed
from pilaf_exp.report.tables import load_runs, markdown
from pilaf_exp.results.launch import multirun
from pilaf_exp.results.protocol import run_checks

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = ROOT / "docs" / "results" / "protocol.yaml"
CHOSEN = "chosen:"  # the block `choose` writes, always last in the file
LATE_SHARES = (0.7, 0.8, 0.9, 1.0)
EXACT_PROMPT_STEP = 16  # exact prompts come in multiples of the pilot's 16 (rule 7)


# claim -> (its protocol file, its pilot's directory under the runs and under docs/results/); a claim
# not named here has no protocol yet and gets no primary endpoint or verdict.
PROTOCOLS = {
    "table3_online": (PROTOCOL, "pilot"),
    "fig4_overfitted": (PROTOCOL.with_name("protocol_fig4_overfitted.yaml"), "pilot_fig4_overfitted"),
    "table2_iterative": (PROTOCOL.with_name("protocol_table2_iterative.yaml"), "pilot_table2_iterative"),
}


def load_protocol(path: Path = PROTOCOL) -> dict:
    return yaml.safe_load(path.read_text())


def run_pilot(protocol: dict, runs: Path, jobs: int) -> None:
    """One vanilla multirun per candidate (skipped when its directory is complete)."""
    pilot = protocol["pilot"]
    seeds = ",".join(str(s) for s in pilot["seeds"])
    for name, overrides in protocol["candidates"].items():
        target = runs / name
        pilot_overrides = [
            f"algo={pilot.get('algo', 'online')}",
            f"sampler={pilot['sampler']}",
            f"seed={seeds}",
            f"experiment_name=pilot_{name}",
            *(f"{key}={value}" for key, value in overrides.items()),
            *pilot.get("overrides", []),
        ]
        multirun(target, pilot_overrides, jobs)


def exact_points(history: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(step, annotations, exact J) of one run's exact evaluations, step 0 at 0 annotations."""
    rows = history.dropna(subset=["exact/J"]).sort_values("step")
    annotations = rows["annotations/total"].where(rows["step"] != 0, 0.0).to_numpy(float)
    return rows["step"].to_numpy(int), annotations, rows["exact/J"].to_numpy(float)


def endpoints(history: pd.DataFrame) -> dict[str, float]:
    """The protocol's three primary-endpoint candidates of one run, from its exact curve alone."""
    steps, annotations, j = exact_points(history)
    last = steps.max()
    late = [j[np.argmin(np.abs(steps - share * last))] for share in LATE_SHARES]
    area = float(np.sum((j[1:] + j[:-1]) / 2 * np.diff(annotations)) / (annotations[-1] - annotations[0]))
    return {"final": float(j[-1]), "late_mean": float(np.mean(late)), "area": area}


def per_run(root: Path) -> pd.DataFrame:
    """One row per pilot run: candidate, seed, stability checks, endpoints, J(pi_ref) and J*."""
    runs, histories = load_runs(root)
    rows = []
    for _, run in runs.iterrows():
        history = histories[histories["run_dir"] == run["run_dir"]]
        candidate = Path(run["run_dir"]).relative_to(root).parts[0]
        checks = run_checks(history)
        rows.append(
            {
                "candidate": candidate,
                "seed": run["seed"],
                "run_dir": run["run_dir"],
                "worst exact-J drop": checks["worst exact-J drop"],
                "worst KL jump": checks["worst KL jump"],
                "J_ref": run["optimum/J_ref"],
                "J_star": run["optimum/J_star"],
                **endpoints(history),
            }
        )
    return pd.DataFrame(rows)


def stability(runs: pd.DataFrame, rule: dict) -> pd.DataFrame:
    """Per candidate: seeds, worst drop and jump over its seeds, runs that break the rule, whether it stays in."""
    broken = (runs["worst exact-J drop"] > rule["max_exact_drop"]) | (runs["worst KL jump"] > rule["max_kl_jump"])
    table = (
        runs.assign(broken=broken)
        .groupby("candidate")
        .agg(
            seeds=("seed", "size"),
            worst_drop=("worst exact-J drop", "max"),
            worst_jump=("worst KL jump", "max"),
            violating_runs=("broken", "sum"),
        )
    )
    table["stays in"] = table["violating_runs"] == table["violating_runs"].min()
    return table


def protocol_order(runs: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(runs["candidate"]))


def spread(runs: pd.DataFrame, kept: list[str], names: list[str]) -> pd.DataFrame:
    """Per (candidate, endpoint in `names`): mean, between-seed sd, mean gain over J(pi_ref) and sd / gain."""
    rows = []
    for candidate in [c for c in protocol_order(runs) if c in kept]:
        group = runs[runs["candidate"] == candidate]
        j_ref = float(group["J_ref"].mean())
        for endpoint in names:
            values = group[endpoint]
            gain = float(values.mean()) - j_ref
            sd = float(values.std(ddof=1))
            ratio = sd / gain if gain > 0 else math.inf
            rows.append(
                {
                    "candidate": candidate,
                    "endpoint": endpoint,
                    "mean": float(values.mean()),
                    "sd": sd,
                    "gain": gain,
                    "sd / gain": ratio,
                }
            )
    return pd.DataFrame(rows)


def chosen_block(runs: pd.DataFrame, table: pd.DataFrame, rule: dict, protocol: dict) -> dict:
    """Steps 2-4 of the rule: the (candidate, endpoint) pair, the margin, the paired sd, the seeds."""
    best = table.sort_values("sd / gain", kind="stable").iloc[0]  # ties: the first in the file's order
    group = runs[runs["candidate"] == best["candidate"]]
    achievable = float((group["J_star"] - group["J_ref"]).mean())
    margin = rule["margin_share"] * achievable
    paired_sd = math.sqrt(2.0) * float(best["sd"])
    seeds = seeds_needed(margin, paired_sd, power=rule["power"], alpha=rule["alpha"])
    capped = {}
    if "max_seeds" in rule:  # rule 6: what the round affords; fewer seeds read "underpowered", never "equal"
        capped = {"seeds_needed": int(seeds)}
        seeds = min(seeds, rule["max_seeds"])
        capped["mde_at_chosen_seeds"] = round(minimum_detectable(paired_sd, seeds, rule["power"], rule["alpha"]), 4)
    return {
        "candidate": str(best["candidate"]),
        "overrides": protocol["candidates"][best["candidate"]],
        "endpoint": str(best["endpoint"]),
        "between_seed_sd": round(float(best["sd"]), 4),
        "pilot_seeds": int(len(group)),
        "achievable_gain": round(achievable, 4),
        "margin": round(margin, 4),
        "paired_sd": round(paired_sd, 4),
        "seeds_per_sampler": int(seeds),
        "mde_at_10_seeds": round(minimum_detectable(paired_sd, 10, rule["power"], rule["alpha"]), 4),
        **capped,
    }


def write_chosen(block: dict, path: Path = PROTOCOL) -> None:
    """Replace the `chosen:` block at the end of the protocol file (the rule above it untouched)."""
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    at = next((i for i, line in enumerate(lines) if line.rstrip() == CHOSEN), len(lines))  # the block's own line
    head = "".join(lines[:at])
    note = "# Written by `python -m pilaf_exp.results.pilot choose` from the pilot runs (the rule above).\n"
    body = yaml.safe_dump({"chosen": block}, sort_keys=False, width=110)
    path.write_text(head.rstrip("\n").removesuffix(note.rstrip("\n")).rstrip("\n") + "\n\n" + note + body)


def evaluation_error(runs_dir: Path, block: dict, rule: dict) -> dict:
    """Rule 5, from `python -m pilaf_exp.results.eval_error` on the chosen candidate (empty before it ran)."""
    path = runs_dir / block["candidate"] / "eval_error.json"
    if not path.exists():
        return {}
    measured = json.loads(path.read_text())
    error, prompts = measured["median standard error"], measured["runs"][0]["prompts"]
    bound = rule["max_error_share"] * block["between_seed_sd"]
    needed = int(math.ceil(prompts * (error / bound) ** 2))
    measured = {
        "median_standard_error": round(error, 4),
        "prompts": prompts,
        "bound": round(bound, 4),
        "within_bound": bool(error <= bound),
        "prompts_for_bound": needed,
    }
    if "max_exact_prompts" in rule:  # rule 7: the smallest multiple of 16 meeting the bound, capped
        enough = EXACT_PROMPT_STEP * math.ceil(needed / EXACT_PROMPT_STEP)
        measured["exact_prompts"] = max(EXACT_PROMPT_STEP, min(enough, rule["max_exact_prompts"]))
        measured["exact_prompts_meet_bound"] = bool(enough <= rule["max_exact_prompts"])
    return measured


def evaluate(runs_dir: Path, protocol: dict) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The rule applied to the pilot runs: the stability table, the spread table, the chosen block."""
    rule = protocol["rule"]
    runs = per_run(runs_dir)
    if runs.empty:
        print(f"error: no pilot runs (summary.json) under {runs_dir}", file=sys.stderr)
        sys.exit(2)
    order = {name: i for i, name in enumerate(protocol["candidates"])}  # ties go to the first
    runs = runs.sort_values("candidate", key=lambda c: c.map(order), kind="stable")
    stable = stability(runs, rule)
    table = spread(runs, list(stable.index[stable["stays in"]]), list(protocol["endpoints"]))  # the file's candidates
    block = chosen_block(runs, table, rule, protocol)
    block["evaluation_error"] = evaluation_error(runs_dir, block, rule)
    report = runs_dir / "report"
    report.mkdir(parents=True, exist_ok=True)
    runs.to_csv(report / "pilot_per_run.csv", index=False)  # copied to docs/results/pilot/ with the tables
    return stable, table, block


def choose(runs_dir: Path, path: Path = PROTOCOL, write: bool = True) -> dict:
    """Apply the rule, print its tables, and (with `write`) write the `chosen:` block."""
    protocol = load_protocol(path)
    stable, table, block = evaluate(runs_dir, protocol)
    report = runs_dir / "report"
    (report / "pilot_stability.md").write_text(markdown(stable.round(3)))
    (report / "pilot_spread.md").write_text(markdown(table.round(4).set_index("candidate")))
    print(stable.round(3).to_string())
    print(table.round(4).to_string(index=False))
    if write:
        write_chosen(block | {"stability": stable.round(4).reset_index().to_dict("records")}, path)
    print(yaml.safe_dump(block, sort_keys=False))
    return block


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The protocol's pilot runs and its rule.")
    parser.add_argument("command", choices=["run", "choose", "check"], help="check: apply the rule, write nothing")
    parser.add_argument("--runs", type=Path, default=ROOT / "results" / "runs" / "pilot")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--protocol", type=Path, default=PROTOCOL, help="the protocol file (default: Table 3's)")
    args = parser.parse_args(argv)
    if not args.protocol.is_file():
        print(f"error: --protocol {args.protocol} is not a file (e.g. {PROTOCOL.relative_to(ROOT)})", file=sys.stderr)
        sys.exit(2)
    if args.command == "run":
        run_pilot(load_protocol(args.protocol), args.runs, args.jobs)
    else:
        choose(args.runs, args.protocol, write=args.command == "choose")


if __name__ == "__main__":
    main()
