"""`make bench`: every speed comparison of the performance issue, in one process and one run.

    python -m pilaf_exp.bench [--quick] [--only samplers mixture online]

1. samplers (`bench.samplers`): vanilla, PILAF, hybrid and best-of-N, wall time and forward passes
   per pair, on the lean engine and on the models' own `transformers` forward.
2. mixture (`bench.mixture`): PILAF's interpolated decoding against TRL's `GeometricMixtureWrapper`
   (both of its generate paths), with each method's log-prob gap to the exact mixture, and the
   scaling of time per call with the response length (16 to 256 tokens).
3. online (`bench.online_step`): one full online-DPO step against TRL's `OnlineDPOTrainer`, pairs/s.
4. exact (`bench.exact`): the exact table's two walks on their lean path against the model's own
   forward (and the copying walk).
5. train_step (`bench.train_step`): one DPO training step's parts at the run's batch and at one pair
   (how much of the step is arithmetic and how much a fixed per-call cost).

Sections 2 and 3 need TRL 1.9.x (`pip install -e '.[bench]'`, which `make bench` does). `--quick`
shrinks every section to a smoke run of a minute or two (CI runs it so the benchmark cannot rot);
its numbers are not the ones BENCHMARKS.md reports.
"""

from __future__ import annotations

import argparse
import time

from pilaf_exp.bench import exact, mixture, online_step, samplers, train_step

FULL = {
    "samplers": ["--repeats", "200"],
    "mixture": ["--new-tokens", "128", "256", "--repeats", "3", "--scaling"],
    "online": ["--new-tokens", "12", "64", "--steps", "20"],
    "exact": ["--repeats", "3"],
    "train_step": ["--repeats", "5"],
}
QUICK = {
    "samplers": ["--repeats", "2", "--engines", "transformers", "auto"],
    "mixture": ["--new-tokens", "16", "--repeats", "1", "--hidden", "64", "--layers", "2", "--batch", "8"],
    "online": ["--new-tokens", "8", "--steps", "3", "--warmup", "1"],
    "exact": ["--vocab", "4", "--length", "4", "--prompts", "1", "--repeats", "1"],
    "train_step": ["--pairs", "4", "--calls", "2", "--repeats", "1"],
}
SECTIONS = {
    "samplers": samplers.main,
    "mixture": mixture.main,
    "online": online_step.main,
    "exact": exact.main,
    "train_step": train_step.main,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of every section (numbers not reportable)")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    args = parser.parse_args(argv)
    section_args = QUICK if args.quick else FULL
    for name in args.only:
        start = time.perf_counter()
        print(f"\n=== {name}: python -m {SECTIONS[name].__module__} {' '.join(section_args[name])}", flush=True)
        SECTIONS[name](section_args[name])
        print(f"=== {name}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
