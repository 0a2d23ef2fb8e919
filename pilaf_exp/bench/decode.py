"""Decoding throughput of vanilla and PILAF pair sampling on the Qwen2.5-0.5B shape.

    python -m pilaf_exp.bench.decode [--batch 16 64] [--prompt-length 32] [--new-tokens 32] [--repeats 3]
                                     [--layers 24] [--threads N]

Builds two randomly initialised fp32 causal LMs with the architecture of Qwen2.5-0.5B (vocab
151,936, hidden 896, 24 layers, 14 query / 2 key-value heads, tied embeddings) locally from a
`Qwen2Config` -- nothing is downloaded -- one as the policy and one (different seed) as the
reference. For each batch size it calls the project's samplers exactly as the training loop does:
`sampler.sample(policy, reference, prompts, mask, DecodeSpec(max_new_tokens), generator)`, which
decodes one pair, i.e. 2 x batch responses, per call. There is no EOS, so every response is
exactly `new_tokens` long and the generated-token count is 2 x batch x new_tokens.

Per batch size: one discarded warm-up call per sampler, then `repeats` timed rounds that
alternate vanilla and PILAF (order flipped every round) in one process, so machine noise hits
both alike. Reports generated tokens/s as median (min-max) over rounds, the measured forward
passes per pair (`PairBatch.generation_passes / batch`), the share of PILAF pairs that were
interpolated, and the PILAF/vanilla ratio of median wall time and of median tokens/s.

The forward-pass cost model puts PILAF at ~1.5x vanilla: the policy decodes all 2B rows in both,
and PILAF additionally runs the reference on the interpolated half of the pairs (B rows). This
benchmark measures how close wall time on CPU comes to that. `--layers` shrinks the depth for a
quick smoke run; it is a benchmark to run by hand, not a timed test. On a shared machine,
`--threads 1` keeps an OpenMP team from stalling on a core another process holds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch import nn
from transformers import AutoModelForCausalLM, Qwen2Config

from pilaf_exp.sampling.decoding import PLUS, DecodeSpec
from pilaf_exp.sampling.samplers import PilafSampler, Sampler, VanillaSampler


def qwen25_05b_shape(layers: int = 24) -> Qwen2Config:
    """The Qwen2.5-0.5B architecture, built locally (no hub access); `layers` may be reduced."""
    return Qwen2Config(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=layers,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )


def random_model(config: Qwen2Config, seed: int) -> nn.Module:
    """A randomly initialised fp32 causal LM of `config`'s shape, seeded, in eval mode."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    return model.eval()


def spread(values: list[float], fmt: str = ".1f") -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


# Per batch size and sampler name, one entry per timed round.
PerRound = dict[int, dict[str, list[float]]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64], help="prompts (pairs) per sampling call")
    parser.add_argument("--prompt-length", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per sampler and batch size")
    parser.add_argument("--layers", type=int, default=24, help="override the depth (e.g. 2 for a smoke run)")
    parser.add_argument("--coef", type=float, default=0.1, help="PILAF interpolation coefficient")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's, one per core)"
    )
    return parser.parse_args(argv)


@torch.inference_mode()
def measure(
    args: argparse.Namespace, policy: nn.Module, reference: nn.Module, vocab_size: int
) -> tuple[PerRound, PerRound, dict[int, list[float]]]:
    """Per batch size: a discarded warm-up call per sampler, then `args.repeats` timed rounds with the
    order flipped every round. Returns wall seconds and forward passes per pair (per batch, per sampler,
    per round) and PILAF's interpolated share of pairs (per batch, per round)."""
    spec = DecodeSpec(max_new_tokens=args.new_tokens)
    samplers: dict[str, Sampler] = {"vanilla": VanillaSampler(), "pilaf": PilafSampler(coef=args.coef)}
    seconds: PerRound = {}
    passes: PerRound = {}
    interpolated: dict[int, list[float]] = {}
    for batch in args.batch:
        prompts = torch.randint(
            0, vocab_size, (batch, args.prompt_length), generator=torch.Generator().manual_seed(batch)
        )
        mask = torch.ones_like(prompts)
        seconds[batch] = {name: [] for name in samplers}
        passes[batch] = {name: [] for name in samplers}
        interpolated[batch] = []
        for sampler in samplers.values():  # warm-up, discarded
            sampler.sample(policy, reference, prompts, mask, spec, torch.Generator().manual_seed(0))
        for repeat in range(1, args.repeats + 1):
            order = list(samplers.items()) if repeat % 2 else list(samplers.items())[::-1]
            for name, sampler in order:
                generator = torch.Generator().manual_seed(repeat)
                start = time.perf_counter()
                pairs = sampler.sample(policy, reference, prompts, mask, spec, generator)
                elapsed = time.perf_counter() - start
                seconds[batch][name].append(elapsed)
                passes[batch][name].append(pairs.generation_passes / batch)
                if name == "pilaf":
                    interpolated[batch].append((pairs.source_a == PLUS).float().mean().item())
                print(
                    f"batch {batch} round {repeat} {name}: {elapsed:.1f} s, "
                    f"{pairs.generation_passes / batch:.2f} passes/pair, load average {os.getloadavg()[0]:.2f}",
                    file=sys.stderr,
                    flush=True,
                )
    return seconds, passes, interpolated


def print_report(
    args: argparse.Namespace,
    config: Qwen2Config,
    params: int,
    seconds: PerRound,
    passes: PerRound,
    interpolated: dict[int, list[float]],
) -> None:
    """The setup line, the markdown table BENCHMARKS.md quotes, then the raw per-round wall times."""
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU fp32; Qwen2.5-0.5B shape "
        f"(hidden {config.hidden_size}, {config.num_hidden_layers} layers, vocab {config.vocab_size}, "
        f"{params / 1e6:.1f}M params), random init; prompt length {args.prompt_length}, "
        f"{args.new_tokens} new tokens, {args.repeats} repeats, PILAF coef {args.coef}"
    )
    print()
    print(
        "| batch (pairs) | vanilla tokens/s | PILAF tokens/s | vanilla wall s | PILAF wall s "
        "| passes/pair vanilla | passes/pair PILAF | PILAF interpolated share "
        "| PILAF/vanilla wall time | PILAF/vanilla tokens/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for batch in args.batch:
        tokens = 2 * batch * args.new_tokens
        rate = {name: [tokens / s for s in times] for name, times in seconds[batch].items()}
        wall = {name: statistics.median(times) for name, times in seconds[batch].items()}
        time_ratio = wall["pilaf"] / wall["vanilla"]
        rate_ratio = statistics.median(rate["pilaf"]) / statistics.median(rate["vanilla"])
        print(
            f"| {batch} | {spread(rate['vanilla'])} | {spread(rate['pilaf'])} "
            f"| {spread(seconds[batch]['vanilla'])} | {spread(seconds[batch]['pilaf'])} "
            f"| {statistics.mean(passes[batch]['vanilla']):.2f} | {spread(passes[batch]['pilaf'], '.2f')} "
            f"| {spread(interpolated[batch], '.2f')} | **{time_ratio:.2f}x** | {rate_ratio:.2f}x |"
        )
    print()
    for batch in args.batch:  # raw per-round wall times, so a noisy round is visible
        rounds = "; ".join(f"{name} " + ", ".join(f"{s:.1f}" for s in times) for name, times in seconds[batch].items())
        print(f"batch {batch} wall s per round: {rounds}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    config = qwen25_05b_shape(args.layers)
    start = time.perf_counter()
    policy = random_model(config, seed=0)
    reference = random_model(config, seed=1)
    params = sum(p.numel() for p in policy.parameters())
    print(f"built two models of {params / 1e6:.1f}M parameters in {time.perf_counter() - start:.1f} s", file=sys.stderr)

    seconds, passes, interpolated = measure(args, policy, reference, config.vocab_size)
    print_report(args, config, params, seconds, passes, interpolated)


if __name__ == "__main__":
    main()
