"""`make results`: every sweep behind RESULTS.md, the report of each, and RESULTS.md itself.

    python -m pilaf_exp.results [--runs DIR] [--only-write] [--jobs 2]

1. each claim's pilot (its protocol file, `results.pilot.PROTOCOLS`: docs/results/protocol.yaml for
   Table 3, docs/results/protocol_fig4_overfitted.yaml for Fig. 4): vanilla-only runs of every
   stabiliser candidate on seeds no table uses; the rule is applied again and checked against the
   values committed in the protocol file before any claim run (a mismatch is printed, not adopted);
2. the claims, each sweep carrying its protocol's values itself (`sweeps/<claim>.yaml`: the chosen
   overrides, seeds and exact prompts; checked before any claim run);
3. `python -m pilaf_exp.report` on each, copied to docs/results/<sweep>/, and RESULTS.md written
   from them, with each claim's primary endpoint and verdict (`results.primary`) and the verdict of
   the gradient analysis (docs/results/gradients.md, `make gradients`): no number in it is typed.
   Every run is kept under --runs (default results/runs/<date>, not in git) and each finished sweep's raw
   files are packed into results/kept/<sweep>.tar.xz (`results.keep`), which is in git.

With --only-write, nothing runs: RESULTS.md is rebuilt from the runs already under --runs, or, when
none is there, from the raw runs kept in the repository (results/kept/, `results.keep`) unpacked there.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from pilaf_exp.infra.cli import compose_config
from pilaf_exp.results.keep import KEPT, pack, unpack
from pilaf_exp.results.launch import head_commit, multirun
from pilaf_exp.results.pilot import PROTOCOLS, choose, load_protocol, run_pilot
from pilaf_exp.results.results_text import (
    bursts_section,
    claim_section,
    gradients_section,
    header,
    protocol_section,
    regimes_section,
)

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "results"
DEFAULT_CLAIMS = tuple(PROTOCOLS)  # the claims with a protocol of their own (and its pilot)
CLAIMS = {  # sweep -> the paper's claim it tests
    "table3_online": "Table 3 (online DPO): PILAF reaches a higher J than vanilla sampling",
    "table2_iterative": "Table 2 (iterative DPO): PILAF reaches a higher J than vanilla sampling",
    "fig4_overfitted": "Fig. 4 (online DPO from an overfitted policy): PILAF improves on vanilla sampling",
}


def sweep(name: str, root: Path, jobs: int, protocol: dict) -> Path:
    """Run one sweep (unless its directory is already complete) and return its directory: the samplers
    the protocol names for the claim (`claims.<name>.samplers`: a list, or all of conf/sampler/)."""
    samplers = protocol.get("claims", {}).get(name, {}).get("samplers", "all")
    chosen = [] if samplers == "all" else [f"hydra.sweeper.params.sampler='{','.join(samplers)}'"]
    return multirun(root / name, [f"+sweep={name}", *chosen], jobs)


def report(sweep_dir: Path) -> Path:
    """`python -m pilaf_exp.report` on one sweep, its outputs copied to docs/results/<sweep>/."""
    subprocess.run(
        [sys.executable, "-m", "pilaf_exp.report", str(sweep_dir)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL
    )
    target = DOCS / sweep_dir.name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(sweep_dir / "report", target)
    return target


def pilot(claim: str, runs: Path, jobs: int, only_write: bool) -> dict | None:
    """The claim's pilot runs (unless only writing) and the rule applied again: the committed `chosen:`
    block is what the claim uses; a different outcome on this machine is printed, not adopted. None for
    a claim without a protocol."""
    if claim not in PROTOCOLS:
        return None
    path, name = PROTOCOLS[claim]
    protocol = load_protocol(path)
    if not only_write:
        run_pilot(protocol, runs / name, jobs)
        pack(runs / name)  # the pilot's raw runs into the repository (results/kept/<pilot>.tar.xz)
    if (runs / name).exists():
        block = choose(runs / name, path, write=False)
        committed = protocol.get("chosen", {})
        for key in ("candidate", "endpoint", "seeds_per_sampler"):
            if committed.get(key) != block.get(key):
                print(f"note: the pilot here gives {key}={block.get(key)}; {path.name} says {committed.get(key)}")
        shutil.rmtree(DOCS / name, ignore_errors=True)
        shutil.copytree(runs / name / "report", DOCS / name)
    return protocol


def sweep_values(chosen: dict) -> dict[str, object]:
    """What the claim's sweep file must carry: the chosen overrides, and the exact prompts rule 7 chose."""
    exact = chosen.get("evaluation_error", {}).get("exact_prompts")
    return chosen["overrides"] | ({"eval.exact_prompts": exact} if exact else {})


def check_sweep(claim: str, protocol: dict | None) -> None:
    """Before any claim run: its protocol has chosen its values and the sweep file carries them (seeds too)."""
    if protocol is None:
        return
    path = PROTOCOLS[claim][0].relative_to(ROOT)
    chosen = protocol.get("chosen")
    if not chosen:
        print(
            f"error: {path} has no chosen block yet: run `python -m pilaf_exp.results.pilot choose --protocol "
            f"{path}` and commit it before any claim run",
            file=sys.stderr,
        )
        sys.exit(2)
    cfg, expected = compose_config(f"+sweep={claim}"), sweep_values(chosen)
    wrong = {k: OmegaConf.select(cfg, k) for k, v in expected.items() if OmegaConf.select(cfg, k) != v}
    seeds = OmegaConf.load(ROOT / "sweeps" / f"{claim}.yaml").hydra.sweeper.params.seed
    if seeds != f"range(0,{chosen['seeds_per_sampler']})":
        wrong["hydra.sweeper.params.seed"] = seeds
    if wrong:
        print(
            f"error: sweeps/{claim}.yaml has {wrong}; {path} chose {expected} on {chosen['seeds_per_sampler']} seeds",
            file=sys.stderr,
        )
        sys.exit(2)


def provenance() -> dict[str, str]:
    import lightning
    import torch
    import transformers

    dirty = subprocess.run(
        ["git", "status", "--porcelain", "pilaf_exp", "conf", "sweeps"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "page written at commit": head_commit() + (" (with uncommitted changes)" if dirty else ""),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "lightning": lightning.__version__,
        "pandas": pd.__version__,
    }


def exact_prompts(runs: Path, sweeps: list[str]) -> dict[str, int]:
    """Per claim, how many prompts its runs enumerate exactly: read from their resolved configs (one
    value a claim: one scale a table)."""
    counts = {}
    for name in sweeps:
        found = {OmegaConf.load(path).eval.exact_prompts for path in (runs / name).glob("*/config_resolved.yaml")}
        if len(found) > 1:
            raise SystemExit(
                f"error: the {name} runs disagree on eval.exact_prompts ({sorted(found)}): one scale a claim"
            )
        if found:
            counts[name] = found.pop()
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "results" / "runs" / time.strftime("%Y-%m-%d"))
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (joblib; each gets its share of cores)")
    parser.add_argument("--only-write", action="store_true", help="rebuild RESULTS.md from the runs already there")
    parser.add_argument("--kept", type=Path, default=KEPT, help="the kept raw runs --only-write falls back on")
    parser.add_argument("--sweeps", nargs="+", default=list(DEFAULT_CLAIMS), choices=list(CLAIMS), help="claims to run")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    finished = lambda: any((args.runs / name / "done").exists() for name in args.sweeps)  # noqa: E731
    if args.only_write and not finished() and any(args.kept.glob("*.tar.xz")):
        unpack(args.kept, args.runs)  # the raw runs kept in the repository (results/kept/)
    if args.only_write and not finished():
        print(
            f"error: --only-write found no finished claim sweep ({', '.join(args.sweeps)}) under {args.runs}; "
            "RESULTS.md left as it is",
            file=sys.stderr,
        )
        sys.exit(2)
    protocols = {name: pilot(name, args.runs, args.jobs, args.only_write) for name in args.sweeps}
    if not args.only_write:
        for name, protocol in protocols.items():
            check_sweep(name, protocol)
    sections = []
    for name, protocol in protocols.items():
        sweep_dir = args.runs / name
        if protocol is not None:
            path, pilot_name = PROTOCOLS[name]
            sections.append(protocol_section(protocol, path.relative_to(ROOT), DOCS / pilot_name))
        if not args.only_write:
            sweep(name, args.runs, args.jobs, protocol or {})  # the sweep file carries the protocol's values
        if (sweep_dir / "done").exists():
            if not args.only_write:
                pack(sweep_dir)  # the raw runs into the repository (results/kept/<claim>.tar.xz)
            chosen, rule = (protocol or {}).get("chosen"), (protocol or {}).get("rule")
            sections.append(claim_section(name, CLAIMS[name], report(sweep_dir), sweep_dir, chosen, rule))
        else:
            finished = len(list(sweep_dir.rglob("summary.json"))) if sweep_dir.exists() else 0
            sections.append(
                f"## {CLAIMS[name]}\n\nNot run to the end yet ({finished} runs finished under {sweep_dir}; "
                "an unfinished sweep is not evidence and gets no table): `make results` runs it.\n"
            )
    sections.append(bursts_section(DOCS / "bursts.md"))
    sections.append(gradients_section(DOCS / "gradients.md"))
    sections.append(regimes_section(DOCS / "regimes.md"))
    seconds = sum(json.loads((d / "done").read_text())["seconds"] for d in args.runs.glob("*") if (d / "done").exists())
    prompts = exact_prompts(args.runs, args.sweeps)
    markers = [args.runs / name / "done" for name in args.sweeps if (args.runs / name / "done").exists()]
    made_at = sorted({json.loads(marker.read_text()).get("commit", "not recorded") for marker in markers})
    versions = {"claim runs made at commit": ", ".join(made_at), **provenance()}
    text = header(versions, seconds, time.perf_counter() - started, prompts) + "\n".join(sections)
    history = DOCS / "history.md"
    if history.exists():
        text += "\n" + history.read_text()
    (ROOT / "RESULTS.md").write_text(text)
    print(f"wrote {ROOT / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
