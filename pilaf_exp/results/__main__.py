"""`make results`: every sweep behind RESULTS.md, the report of each, and RESULTS.md itself.

    python -m pilaf_exp.results [--runs DIR] [--only-write] [--jobs 2]

1. the protocol's pilot (`docs/results/protocol.yaml`, `results.pilot`): vanilla-only runs of every
   stabiliser candidate on seeds no table uses; the rule is applied again and checked against the
   values committed in the protocol file before any claim run (a mismatch is printed, not adopted);
2. the claims, each sweep carrying the protocol's values itself (`sweeps/<claim>.yaml`; by default
   Table 3 online, the one claim the pilot covers);
3. `python -m pilaf_exp.report` on each, copied to docs/results/<sweep>/, and RESULTS.md written
   from them, with each claim's primary endpoint and verdict (`results.primary`) and the verdict of
   the gradient analysis (docs/results/gradients.md, `make gradients`): no number in it is typed.
   Every run is kept under --runs (default results/runs/<date>, not in git) and each finished claim's raw
   files are packed into results/kept/<claim>.tar.xz (`results.keep`), which is in git.

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
from pilaf_exp.results.pilot import choose, load_protocol, run_pilot
from pilaf_exp.results.results_text import bursts_section, claim_section, gradients_section, header, protocol_section

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "results"
DEFAULT_CLAIMS = ("table3_online",)  # the claims the protocol's pilot covers (docs/results/protocol.yaml)
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


def pilot(runs: Path, jobs: int, only_write: bool) -> dict:
    """The pilot runs (unless only writing) and the rule applied again: the committed `chosen:` block is
    what the claims use; a different outcome on this machine is printed, not adopted."""
    protocol = load_protocol()
    if not only_write:
        run_pilot(protocol, runs / "pilot", jobs)
    if (runs / "pilot").exists():
        block = choose(runs / "pilot", write=False)
        committed = protocol.get("chosen", {})
        for key in ("candidate", "endpoint", "seeds_per_sampler"):
            if committed.get(key) != block.get(key):
                print(f"note: the pilot here gives {key}={block.get(key)}; the protocol says {committed.get(key)}")
        shutil.rmtree(DOCS / "pilot", ignore_errors=True)
        shutil.copytree(runs / "pilot" / "report", DOCS / "pilot")
    return protocol


def check_sweeps(protocol: dict, names: list[str]) -> None:
    """Before any claim run: the protocol has chosen its values and every claim's sweep file carries them."""
    chosen = protocol.get("chosen")
    if not chosen:
        print(
            "error: docs/results/protocol.yaml has no chosen block yet: run `python -m pilaf_exp.results.pilot "
            "choose` and commit it before any claim run",
            file=sys.stderr,
        )
        sys.exit(2)
    for name in names:
        cfg = compose_config(f"+sweep={name}")
        wrong = {k: OmegaConf.select(cfg, k) for k, v in chosen["overrides"].items() if OmegaConf.select(cfg, k) != v}
        if wrong:
            print(f"error: sweeps/{name}.yaml has {wrong}; the protocol chose {chosen['overrides']}", file=sys.stderr)
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


def exact_prompts(runs: Path, sweeps: list[str]) -> int:
    """How many prompts the claim runs enumerate exactly: read from their resolved configs (one value)."""
    configs = [path for name in sweeps for path in (runs / name).glob("*/config_resolved.yaml")]
    counts = {OmegaConf.load(path).eval.exact_prompts for path in configs}
    if len(counts) > 1:
        raise SystemExit(f"error: the claim runs disagree on eval.exact_prompts ({sorted(counts)}): one scale a table")
    return counts.pop() if counts else compose_config().eval.exact_prompts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "results" / "runs" / time.strftime("%Y-%m-%d"))
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (joblib; each gets its share of cores)")
    parser.add_argument("--only-write", action="store_true", help="rebuild RESULTS.md from the runs already there")
    parser.add_argument("--sweeps", nargs="+", default=list(DEFAULT_CLAIMS), choices=list(CLAIMS), help="claims to run")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    finished = lambda: any((args.runs / name / "done").exists() for name in args.sweeps)  # noqa: E731
    if args.only_write and not finished() and any(KEPT.glob("*.tar.xz")):
        unpack(KEPT, args.runs)  # the raw runs kept in the repository (results/kept/)
    if args.only_write and not finished():
        print(
            f"error: --only-write found no finished claim sweep ({', '.join(args.sweeps)}) under {args.runs}; "
            "RESULTS.md left as it is",
            file=sys.stderr,
        )
        sys.exit(2)
    protocol = pilot(args.runs, args.jobs, args.only_write)
    if not args.only_write:
        check_sweeps(protocol, args.sweeps)
    sections = [protocol_section(protocol, DOCS / "pilot")]
    for name in args.sweeps:
        sweep_dir = args.runs / name
        if not args.only_write:
            sweep(name, args.runs, args.jobs, protocol)  # the sweep file carries the protocol's values
        if (sweep_dir / "done").exists():
            if not args.only_write:
                pack(sweep_dir)  # the raw runs into the repository (results/kept/<claim>.tar.xz)
            chosen, rule = protocol.get("chosen"), protocol["rule"]
            sections.append(claim_section(name, CLAIMS[name], report(sweep_dir), sweep_dir, chosen, rule))
        else:
            finished = len(list(sweep_dir.rglob("summary.json"))) if sweep_dir.exists() else 0
            sections.append(
                f"## {CLAIMS[name]}\n\nNot run to the end yet ({finished} runs finished under {sweep_dir}; "
                "an unfinished sweep is not evidence and gets no table): `make results` runs it.\n"
            )
    sections.append(bursts_section(DOCS / "bursts.md"))
    sections.append(gradients_section(DOCS / "gradients.md"))
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
