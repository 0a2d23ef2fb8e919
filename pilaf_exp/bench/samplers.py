"""Sampler benchmark: wall time and forward passes per pair, every sampler and decode engine side by side.

    python -m pilaf_exp.bench.samplers [--batch 64] [--new-tokens 6] [--repeats 15] [--hidden 64 --layers 2]
    python -m pilaf_exp.bench.samplers --profile      # where one sampling call spends its time, per engine

Every sampler decodes with the same two models (a policy and a different reference), the same
prompts and the same number of new tokens, interleaved round-robin in one process so machine
noise hits them alike. Prints the median (min-max) per pair, the ratio to vanilla on the same
engine (the median over repeats of each repeat's ratio, so a slow moment hits both sides of it),
and each engine's speed-up over the `transformers` engine (the models' own forward).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch
from hydra.utils import instantiate
from torch.profiler import ProfilerActivity, profile

from pilaf_exp.infra.cli import compose_config, sampler_names
from pilaf_exp.models.builders import tiny_llama
from pilaf_exp.sampling.decoding import DecodeSpec
from pilaf_exp.sampling.samplers import Sampler


def configured_samplers() -> dict[str, Sampler]:
    """Every sampler of conf/sampler/, as the default config builds it (beta 0.1, best-of-8)."""
    return {name: instantiate(compose_config("output_dir=.", f"sampler={name}").sampler) for name in sampler_names()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="prompts (pairs) per sampling call")
    parser.add_argument("--prompt-length", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--engines", nargs="+", default=["transformers", "auto"], help="decode engines to compare")
    parser.add_argument("--profile", action="store_true", help="print a torch-profiler table per engine instead")
    return parser.parse_args(argv)


def setup(args: argparse.Namespace):
    shape = dict(hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads, max_positions=1024)
    policy = tiny_llama(args.vocab, seed=0, **shape).eval()
    reference = tiny_llama(args.vocab, seed=1, **shape).eval()
    prompts = torch.randint(0, args.vocab, (args.batch, args.prompt_length), generator=torch.Generator().manual_seed(0))
    return policy, reference, prompts, torch.ones_like(prompts)


def time_samplers(args: argparse.Namespace) -> dict[tuple[str, str], dict[str, list[float]]]:
    """(engine, sampler) -> seconds per pair, forward passes per pair and response tokens/s, per repeat."""
    policy, reference, prompts, mask = setup(args)
    samplers = configured_samplers()
    results: dict[tuple[str, str], dict[str, list[float]]] = {}
    for repeat in range(args.repeats + 1):  # repeat 0 warms up and is discarded
        for engine in args.engines:
            spec = DecodeSpec(max_new_tokens=args.new_tokens, engine=engine)
            for name, sampler in samplers.items():
                generator = torch.Generator().manual_seed(repeat)
                start = time.perf_counter()
                pairs = sampler.sample(policy, reference, prompts, mask, spec, generator)
                elapsed = time.perf_counter() - start
                if repeat:
                    row = results.setdefault((engine, name), {"s": [], "passes": [], "tokens/s": []})
                    row["s"].append(elapsed / args.batch)
                    row["tokens/s"].append(float(pairs.mask_a.sum() + pairs.mask_b.sum()) / elapsed)
                    row["passes"].append((pairs.generation_passes + pairs.selection_passes) / args.batch)
    return results


def print_table(args: argparse.Namespace, results: dict) -> None:
    print(
        f"batch {args.batch}, prompt {args.prompt_length}, new tokens {args.new_tokens}, hidden {args.hidden} x "
        f"{args.layers} layers, vocab {args.vocab}, {torch.get_num_threads()} threads, {args.repeats} repeats"
    )
    print(
        f"{'engine':<13} {'sampler':<10} {'ms/pair median (min-max)':>27} {'tokens/s':>9} {'passes/pair':>11} "
        f"{'vs vanilla':>11} {'vs transformers':>16}"
    )
    for (engine, name), row in results.items():
        median = statistics.median(row["s"])
        vanilla = results[(engine, "vanilla")]["s"]
        ratio = statistics.median(s / v for s, v in zip(row["s"], vanilla, strict=True))
        hf = results.get(("transformers", name))
        speedup = f"{statistics.median(hf['s']) / median:.2f}x faster" if hf else "-"
        spread = f"{1e3 * median:.3f} ({1e3 * min(row['s']):.3f}-{1e3 * max(row['s']):.3f})"
        print(
            f"{engine:<13} {name:<10} {spread:>27} {statistics.median(row['tokens/s']):>9.0f} "
            f"{statistics.mean(row['passes']):>11.2f} "
            f"{ratio:>10.2f}x {speedup:>16}"
        )


def print_profile(args: argparse.Namespace, name: str, sampler: Sampler) -> None:
    """Top operators of one sampling call per engine (after a warm-up call)."""
    policy, reference, prompts, mask = setup(args)
    for engine in args.engines:
        spec = replace(DecodeSpec(max_new_tokens=args.new_tokens), engine=engine)
        sampler.sample(policy, reference, prompts, mask, spec, torch.Generator().manual_seed(0))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            sampler.sample(policy, reference, prompts, mask, spec, torch.Generator().manual_seed(0))
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        print(f"\n{name}, engine {engine}: {len(events)} operator kinds, {total / 1e3:.1f} ms self CPU time")
        print(events.table(sort_by="self_cpu_time_total", row_limit=12))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    if args.profile:
        for name, sampler in list(configured_samplers().items())[:2]:
            print_profile(args, name, sampler)
        return
    print_table(args, time_samplers(args))


if __name__ == "__main__":
    main()
