"""Sampler benchmark: wall time and forward passes per pair, all samplers side by side.

    python -m pilaf_exp.bench [--batch 64] [--new-tokens 6] [--repeats 7] [--hidden 64 --layers 2]

Every sampler decodes with the same two models (a policy and a different reference), the
same prompts and the same number of new tokens, interleaved round-robin in one process so
machine noise hits them alike. Prints the median (min-max) per pair and the ratio to vanilla.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pilaf_exp.generation import DecodeSpec
from pilaf_exp.models import tiny_llama
from pilaf_exp.samplers import BestOfNSampler, HybridSampler, PilafSampler, VanillaSampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="prompts (pairs) per sampling call")
    parser.add_argument("--prompt-length", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    shape = dict(hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads, max_positions=512)
    policy = tiny_llama(args.vocab, seed=0, **shape).eval()
    reference = tiny_llama(args.vocab, seed=1, **shape).eval()
    prompts = torch.randint(0, args.vocab, (args.batch, args.prompt_length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(prompts)
    spec = DecodeSpec(max_new_tokens=args.new_tokens)
    samplers = [VanillaSampler(), PilafSampler(coef=0.1), HybridSampler(), BestOfNSampler(n=8, beta=0.1)]
    seconds: dict[str, list[float]] = {s.name: [] for s in samplers}
    passes: dict[str, list[float]] = {s.name: [] for s in samplers}
    torch.set_grad_enabled(False)
    for repeat in range(args.repeats + 1):  # repeat 0 warms up and is discarded
        for sampler in samplers:
            generator = torch.Generator().manual_seed(repeat)
            start = time.perf_counter()
            pairs = sampler.sample(policy, reference, prompts, mask, spec, generator)
            elapsed = time.perf_counter() - start
            if repeat:
                seconds[sampler.name].append(elapsed / args.batch)
                passes[sampler.name].append((pairs.generation_passes + pairs.selection_passes) / args.batch)

    print(
        f"batch {args.batch}, prompt {args.prompt_length}, new tokens {args.new_tokens}, "
        f"hidden {args.hidden} x {args.layers} layers, {torch.get_num_threads()} threads, {args.repeats} repeats"
    )
    base = statistics.median(seconds["vanilla"])
    print(f"{'sampler':<10} {'ms/pair median (min-max)':>28} {'passes/pair':>12} {'time vs vanilla':>16}")
    for name, times in seconds.items():
        median = statistics.median(times)
        spread = f"{1e3 * median:.3f} ({1e3 * min(times):.3f}-{1e3 * max(times):.3f})"
        print(f"{name:<10} {spread:>28} {statistics.mean(passes[name]):>12.2f} {median / base:>15.2f}x")


if __name__ == "__main__":
    main()
