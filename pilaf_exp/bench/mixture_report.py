"""The command line and the printed / JSON report of `bench.mixture`, kept apart from the measuring so
that module stays about timing and exactness. Nothing here imports trl until `versions` is called."""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict, dataclass, field

import torch


@dataclass
class Result:
    """One method at one response length."""

    seconds: list[float] = field(default_factory=list)  # timed calls (warm-up excluded)
    max_gap: float = 0.0  # max |sampled-from log-prob - exact mixture log-prob| over tokens and calls, nats
    mean_gap: float = 0.0  # mean |gap| over tokens, averaged over calls
    skipped: bool = False

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def parse_args(argv: list[str] | None, description: str) -> argparse.Namespace:
    """`description` is the first line of `bench.mixture`'s docstring, so `--help` reads as it always did."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[128, 256], help="response lengths (main table)")
    parser.add_argument("--batch", type=int, default=32, help="rows per generation call")
    parser.add_argument("--prompt-length", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per length (after one warm-up)")
    parser.add_argument("--coef", type=float, default=0.1, help="mixture coefficient c: (1-c)*policy + c*reference")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--scaling", action="store_true", help="also print time vs response length")
    parser.add_argument("--scaling-lengths", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument(
        "--trl-exact-max-tokens", type=int, default=None, help="skip trl-exact above this many new tokens (slow)"
    )
    parser.add_argument("--json", type=str, default=None, help="write the raw numbers to this path")
    return parser.parse_args(argv)


def versions() -> dict[str, str]:
    """Library versions for the header and the JSON; imports trl, so call it only once TRL is known present."""
    import transformers
    import trl

    return {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__}


def spread(values: list[float], scale: float = 1.0) -> str:
    return f"{scale * statistics.median(values):.3f} ({scale * min(values):.3f}-{scale * max(values):.3f})"


def print_header(args: argparse.Namespace, info: dict[str, str]) -> None:
    """The run's shape and library versions, then what the |gap| columns mean."""
    print(
        f"batch {args.batch}, prompt {args.prompt_length}, vocab {args.vocab}, hidden {args.hidden} x {args.layers} "
        f"layers x {args.heads} heads, fp32, coef {args.coef}, {torch.get_num_threads()} threads, "
        f"{args.repeats} repeats; torch {info['torch']}, transformers {info['transformers']}, trl {info['trl']}"
    )
    print("|gap| = |log-prob the token was sampled from - exact mixture log-prob|, nats, max/mean over all tokens")


def print_main_table(results: dict[int, dict[str, Result]], lengths: list[int], batch: int) -> None:
    print(
        f"{'tokens':>6} {'method':<10} {'s/call median (min-max)':>26} {'tokens/s':>10} {'max |gap|':>10} "
        f"{'mean |gap|':>10}"
    )
    for length in lengths:
        for name, res in results[length].items():
            if res.skipped:
                print(f"{length:>6} {name:<10} {'skipped':>26}")
                continue
            rate = batch * length / res.median
            print(
                f"{length:>6} {name:<10} {spread(res.seconds):>26} {rate:>10.0f} {res.max_gap:>10.2e} "
                f"{res.mean_gap:>10.2e}"
            )
    print("speed ratios (TRL median time / pilaf_exp median time):")
    for length in lengths:
        ours = results[length]["pilaf_exp"].median
        ratios = [
            f"{res.median / ours:.1f}x over {name}"
            for name, res in results[length].items()
            if name != "pilaf_exp" and not res.skipped
        ]
        print(f"{length:>6} tokens: pilaf_exp speed-up " + ", ".join(ratios))


def print_scaling_table(results: dict[int, dict[str, Result]], lengths: list[int], methods: tuple[str, ...]) -> None:
    """`methods` fixes the column order (`mixture.METHODS`), whatever order the results were stored in."""
    print("scaling: median s per call and ms per token position (= call time / new tokens; flat = linear growth)")
    print(f"{'tokens':>6} " + " ".join(f"{name + ' s':>14} {'ms/tok':>8}" for name in methods))
    for length in lengths:
        cells = []
        for name in methods:
            res = results[length][name]
            cells.append(
                f"{'skipped':>14} {'':>8}" if res.skipped else f"{res.median:>14.3f} {1e3 * res.median / length:>8.2f}"
            )
        print(f"{length:>6} " + " ".join(cells))


def write_json(
    path: str, args: argparse.Namespace, info: dict[str, str], results: dict[int, dict[str, Result]]
) -> None:
    """The raw numbers behind the tables (every timed call), for BENCHMARKS.md and later comparison."""
    raw = {
        "args": vars(args),
        "threads": torch.get_num_threads(),
        "versions": info,
        "results": {
            str(length): {
                name: {**asdict(res), **({} if res.skipped else {"median": res.median})}
                for name, res in by_method.items()
            }
            for length, by_method in results.items()
        },
    }
    with open(path, "w") as f:
        json.dump(raw, f, indent=2)
