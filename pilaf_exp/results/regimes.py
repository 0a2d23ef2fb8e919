"""When does PILAF help? The regime map of docs/results/protocol_regimes.yaml: per cell (a setting of beta,
the oracle's scale, the start and the response length) PILAF against vanilla on Table 3's primary endpoint,
paired by seed, beside what the theorem predicted for that cell before its runs.

    python -m pilaf_exp.results.regimes [--runs results/runs/regimes] [--jobs 2]   # run what is missing, write
    python -m pilaf_exp.results.regimes --only-write                               # from the kept raw runs

New cells run their sweep (sweeps/regime_<cell>.yaml), are packed into results/kept/regimes/<cell>.tar.xz and
keep the final policy of seed 0 per sampler (results/kept/regimes/policies/, weights only) for the theorem's
quantities at a trained checkpoint. The two cells made of earlier claims (Table 3, Fig. 4) read those claims'
kept archives; `--policies-from paper=DIR` keeps their seed-0 policies from a machine's full runs.
Writes docs/results/regimes.md and its figure; RESULTS.md's section "When PILAF helps" quotes the page.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import pandas as pd
import torch
import yaml
from omegaconf import OmegaConf

from pilaf_exp.analysis.checkpoint_theory import checkpoint_quantities
from pilaf_exp.infra.cli import BASELINE_SAMPLER
from pilaf_exp.report.decide import decide, holm_words
from pilaf_exp.report.tables import load_runs
from pilaf_exp.results.keep import KEPT, pack, unpack_archive
from pilaf_exp.results.launch import multirun
from pilaf_exp.results.pilot import PROTOCOLS, load_protocol
from pilaf_exp.results.primary import CANDIDATE, per_seed
from pilaf_exp.results.regime_cells import Cell, CellResult, load_cells

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "results"
PROTOCOL = DOCS / "protocol_regimes.yaml"
PAGE = DOCS / "regimes.md"
KEPT_CELLS = KEPT / "regimes"
POLICIES = KEPT_CELLS / "policies"
POLICY_SEED = 0  # the seed whose final policies are kept for the theorem's quantities
THEORY_PROMPTS, THEORY_TOP = 4, 512  # as the predictions (protocol: prediction)


def cell_dir(cell: Cell, runs: Path) -> Path:
    """Where a cell's runs are: a claim's sweep under its own name, a new cell under the cell's."""
    return runs / (cell.sweep if cell.kept else cell.name)


def policy_path(cell: Cell, sampler: str) -> Path:
    return POLICIES / f"{cell.name}-{sampler}-s{POLICY_SEED}.ckpt"


def keep_policies(cell: Cell, sweep: Path) -> None:
    """The final policy of seed POLICY_SEED of vanilla and PILAF (the `policy.` weights of its last checkpoint, no
    optimiser state) and its resolved config, into results/kept/regimes/policies/."""
    POLICIES.mkdir(parents=True, exist_ok=True)
    for config in sorted(sweep.glob("*/config_resolved.yaml")):
        cfg = OmegaConf.load(config)
        if int(cfg.seed) != POLICY_SEED or cfg.choices.sampler not in (BASELINE_SAMPLER, CANDIDATE):
            continue
        last = sorted((config.parent / "checkpoints").glob("step_*.ckpt"))[-1]
        checkpoint = torch.load(last, map_location="cpu", weights_only=False)
        state = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("policy.")}
        target = policy_path(cell, cfg.choices.sampler)
        torch.save({"state_dict": state, "pilaf": checkpoint.get("pilaf", {})}, target)
        shutil.copyfile(config, target.with_suffix(".yaml"))


def prepare(cells: list[Cell], runs: Path, jobs: int, only_write: bool) -> None:
    """Every cell's runs under `runs`: unpacked from the kept archives, or run (new cells, not --only-write);
    a finished new cell not yet kept is packed into results/kept/regimes/ with its seed-0 policies."""
    for cell in cells:
        directory = cell_dir(cell, runs)
        archive = KEPT / f"{cell.sweep}.tar.xz" if cell.kept else KEPT_CELLS / f"{cell.name}.tar.xz"
        if not (directory / "done").exists():
            if archive.exists():
                unpack_archive(archive, runs)
            elif not only_write and not cell.kept:
                multirun(directory, [f"+sweep={cell.sweep}"], jobs)
        if not cell.kept and (directory / "done").exists() and not archive.exists():
            pack(directory, KEPT_CELLS)
            keep_policies(cell, directory)


def world_optimum(directory: Path) -> tuple[float, float]:
    """J(pi_ref) and J* - J(pi_ref) of a cell's world (one value for all its runs: the world fixes them)."""
    runs, _ = load_runs(directory)
    pairs = runs[["optimum/J_ref", "optimum/J_star"]].round(6).drop_duplicates()
    if len(pairs) != 1:
        raise SystemExit(f"error: the runs under {directory} disagree on J(pi_ref) or J*: one world a cell")
    reference, optimum = pairs.iloc[0]
    return float(reference), float(optimum - reference)


def margin(cell: Cell, gain: float, settings: dict) -> float:
    """A new cell's margin: the share of its J* - J(pi_ref); a claim's cell keeps the margin its own protocol
    fixed before its runs (one margin per claim across RESULTS.md)."""
    if cell.kept:
        return float(load_protocol(PROTOCOLS[cell.sweep][0])["chosen"]["margin"])
    return settings["margin_share"] * gain


def measure_cell(cell: Cell, directory: Path, settings: dict) -> CellResult:
    table = per_seed(directory, settings["endpoint"]).dropna(subset=[CANDIDATE, BASELINE_SAMPLER])
    reference, cell_gain = world_optimum(directory)
    decision = decide(table[CANDIDATE] - table[BASELINE_SAMPLER], margin(cell, cell_gain, settings))
    final = per_seed(directory, "final")[BASELINE_SAMPLER].mean()
    seconds = json.loads((directory / "done").read_text())["seconds"]
    vanilla = float(table[BASELINE_SAMPLER].mean())
    return CellResult(cell, cell_gain, vanilla, (final - reference) / cell_gain, decision, seconds)


def apply_holm(results: list[CellResult], family: list[str]) -> None:
    members = [r for r in results if r.cell.name in family]
    words, _ = holm_words([r.decision for r in members], [True] * len(members))
    for result, word in zip(members, words):
        result.holm = word


def theorem_table(cells: list[Cell]) -> pd.DataFrame:
    """Per kept policy (cell x sampler, seed 0, final step): the theorem's quantities."""
    rows = []
    for cell in cells:
        for sampler in (BASELINE_SAMPLER, CANDIDATE):
            path = policy_path(cell, sampler)
            if not path.exists():
                continue
            config = OmegaConf.load(path.with_suffix(".yaml"))
            quantities = checkpoint_quantities(path, config, THEORY_PROMPTS, THEORY_TOP)
            rows.append({"cell": cell.name, "trained with": sampler} | quantities.to_dict())
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    from pilaf_exp.results.regimes_page import write_page  # matplotlib, only when the page is written

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "results" / "runs" / "regimes")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (joblib)")
    parser.add_argument("--only-write", action="store_true", help="write the page from the kept raw runs only")
    parser.add_argument("--policies-from", nargs="*", default=[], metavar="CELL=DIR", help="keep a cell's policies")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    protocol = yaml.safe_load(PROTOCOL.read_text())
    cells = load_cells(protocol)
    names = {cell.name: cell for cell in cells}
    for item in args.policies_from:
        name, _, directory = item.partition("=")
        if name not in names or not Path(directory).is_dir():
            raise SystemExit(f"error: --policies-from {item!r}: want CELL=DIR, CELL one of {', '.join(names)}")
        keep_policies(names[name], Path(directory))
    prepare(cells, args.runs, args.jobs, args.only_write)
    done = [cell for cell in cells if (cell_dir(cell, args.runs) / "done").exists()]
    results = [measure_cell(cell, cell_dir(cell, args.runs), protocol["settings"]) for cell in done]
    apply_holm(results, protocol["decision"]["holm_over"])
    missing = [cell.name for cell in cells if cell not in done]
    write_page(results, missing, theorem_table(cells), PAGE, time.perf_counter() - started)
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
