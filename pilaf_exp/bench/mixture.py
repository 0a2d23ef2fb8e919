"""Mixture decoding benchmark: pilaf_exp's KV-cached `decode` against TRL 1.9's `GeometricMixtureWrapper`.

    python -m pilaf_exp.bench.mixture [--new-tokens 128 256] [--batch 32] [--prompt-length 8] [--repeats 5]
                                      [--hidden 256 --layers 4 --heads 4 --vocab 64] [--coef 0.1] [--threads N]
                                      [--scaling [--scaling-lengths 16 32 64 128 256]]
                                      [--trl-exact-max-tokens N] [--json PATH]

Both sides sample every row from the same token-level geometric mixture of two seeded random tiny
Llamas (policy seed 0, reference seed 1, built locally, fp32):
    logits = (1 - c) * h_policy + c * h_ref,   c = --coef
which is pilaf_exp's MINUS source (all rows MINUS) and TRL's wrapper with `mixture_coef = c`.
There is no EOS, so every response is exactly `new_tokens` long. Methods:

    pilaf_exp    generation.decode: one KV cache per model
    trl-cached   GeometricMixtureWrapper.generate, default GenerationConfig (use_cache=True). With
                 transformers 5 `generate` hands ONE cache to the wrapper and both models append
                 their keys/values to it (it ends 2 x (P + T - 1) long), so each model attends over
                 the other's too: inexact, even at c = 0.
    trl-exact    the same with GenerationConfig(use_cache=False): exact, but re-reads the whole
                 prefix with both models at every token (quadratic in the response length).

One discarded warm-up call per method (at the shortest length), then per length `repeats` timed rounds with the
methods interleaved round-robin (start rotated every round) so machine noise hits them alike.
Exactness: after each call (untimed), both models are run once (plain forward, use_cache=False) over
prompt + response; the exact mixture log-prob of every sampled token is compared with the log-prob
the method sampled it from (pilaf_exp: `Decoded.logprobs`; TRL: log_softmax of the per-step
`output_logits`, which the wrapper already returns as mixture log-probs). Reports max |gap| in nats
over all tokens and calls. `--scaling` adds time per call and per token position against length.
A benchmark to run by hand (it needs TRL: pip install -e '.[bench]'), not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from pilaf_exp.models.builders import tiny_llama
from pilaf_exp.sampling.decoding import MINUS, DecodeSpec, decode

METHODS: tuple[str, ...] = ("pilaf_exp", "trl-cached", "trl-exact")
# A method call: (response length, seed) -> (tokens [R, T], log-prob each token was sampled from [R, T]).
Sampler = Callable[[int, int], tuple[Tensor, Tensor]]


@dataclass
class Setup:
    """The two models and the prompt batch every method decodes from."""

    policy: nn.Module
    reference: nn.Module
    prompts: Tensor  # [R, P], no padding
    mask: Tensor  # [R, P]
    coef: float


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


def load_trl_wrapper() -> type:
    """Import TRL only here, so importing pilaf_exp (even this module) never imports trl."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # we know the wrapper is experimental
    try:
        from trl.experimental.nash_md.nash_md_trainer import GeometricMixtureWrapper
    except ImportError:
        print("error: pilaf_exp.bench.mixture needs TRL 1.9.x: pip install -e '.[bench]'", file=sys.stderr)
        sys.exit(2)
    return GeometricMixtureWrapper


def build_setup(args: argparse.Namespace) -> Setup:
    longest = max(args.new_tokens + (args.scaling_lengths if args.scaling else []))
    shape = dict(
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=args.heads,
        max_positions=args.prompt_length + longest,
    )
    policy = tiny_llama(args.vocab, seed=0, **shape).eval()
    reference = tiny_llama(args.vocab, seed=1, **shape).eval()
    prompts = torch.randint(0, args.vocab, (args.batch, args.prompt_length), generator=torch.Generator().manual_seed(0))
    return Setup(policy, reference, prompts, torch.ones_like(prompts), args.coef)


def pilaf_sampler(setup: Setup) -> Sampler:
    sources = torch.full((len(setup.prompts),), MINUS, dtype=torch.long)

    def run(length: int, seed: int) -> tuple[Tensor, Tensor]:
        spec = DecodeSpec(max_new_tokens=length, eos_token_id=None)
        generator = torch.Generator().manual_seed(seed)
        out = decode(
            setup.policy, setup.reference, setup.prompts, setup.mask, sources, spec, generator, coef=setup.coef
        )
        if int(out.mask.sum()) != out.mask.numel():  # no EOS: every row must run the full length
            raise RuntimeError("pilaf_exp decode stopped a row early")
        return out.tokens, out.logprobs

    return run


def trl_sampler(setup: Setup, wrapper_class: type, use_cache: bool) -> Sampler:
    from transformers import GenerationConfig

    def run(length: int, seed: int) -> tuple[Tensor, Tensor]:
        # No EOS anywhere (not even the model config's default id 2), so generate never stops
        # early and no min-length processor masks a token; top_k=0/top_p=1: no truncation.
        config = GenerationConfig(
            max_new_tokens=length,
            min_new_tokens=length,
            do_sample=True,
            top_k=0,
            top_p=1.0,
            temperature=1.0,
            eos_token_id=None,
            bos_token_id=None,
            pad_token_id=0,
            use_cache=use_cache,
            return_dict_in_generate=True,
            output_logits=True,
        )
        # generate() reads self.device, which the wrapper only sets from this argument (default None).
        wrapper = wrapper_class(
            setup.policy, setup.reference, config, mixture_coef=setup.coef, device=setup.prompts.device
        )
        torch.manual_seed(seed)  # HF generate samples from the global generator
        out = wrapper.generate(input_ids=setup.prompts, attention_mask=setup.mask, generation_config=config)
        tokens = out.sequences[:, setup.prompts.shape[1] :]
        # The wrapper's forward already returns mixture log-probs; log_softmax again is a no-op.
        logp = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1)
        return tokens, logp.gather(-1, tokens[..., None]).squeeze(-1)

    return run


@torch.no_grad()
def exact_logprobs(setup: Setup, tokens: Tensor) -> Tensor:
    """Log-prob of each response token [R, T] under the exact mixture, both models recomputed from scratch."""
    ids = torch.cat([setup.prompts, tokens], dim=1)
    mask = torch.cat([setup.mask, torch.ones_like(tokens)], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    start, length = setup.prompts.shape[1] - 1, tokens.shape[1]  # logits at position i predict token i + 1
    logits = [
        model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
        .logits[:, start : start + length]
        .float()
        for model in (setup.policy, setup.reference)
    ]
    mixed = (1 - setup.coef) * logits[0] + setup.coef * logits[1]
    return torch.log_softmax(mixed, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)


def check_call(setup: Setup, name: str, length: int, tokens: Tensor, logprobs: Tensor, result: Result) -> None:
    """Verify the response shape and fold this call's exactness gap into `result`."""
    expected = (len(setup.prompts), length)
    if tuple(tokens.shape) != expected or tuple(logprobs.shape) != expected:
        raise RuntimeError(f"{name} returned tokens {tuple(tokens.shape)}, log-probs {tuple(logprobs.shape)}")
    gap = (logprobs.float() - exact_logprobs(setup, tokens)).abs()
    calls = len(result.seconds)  # timed calls so far; the warm-up counts as one more call
    result.max_gap = max(result.max_gap, float(gap.max()))
    result.mean_gap = (result.mean_gap * calls + float(gap.mean())) / (calls + 1)


def measure(setup: Setup, samplers: dict[str, Sampler], length: int, repeats: int, warm_up: bool) -> dict[str, Result]:
    """`repeats` interleaved timed rounds of every method at one response length, after a discarded
    warm-up round if `warm_up` (the first length only: a second one would add minutes of TRL's exact path)."""
    results = {name: Result() for name in samplers}
    names = list(samplers)
    for repeat in range(0 if warm_up else 1, repeats + 1):  # repeat 0 warms up and is discarded
        for i in range(len(names)):
            name = names[(i + repeat) % len(names)]  # rotate who goes first
            start = time.perf_counter()
            tokens, logprobs = samplers[name](length, repeat)
            elapsed = time.perf_counter() - start
            check_call(setup, name, length, tokens, logprobs, results[name])
            if repeat:
                results[name].seconds.append(elapsed)
            label = "warm-up" if not repeat else f"repeat {repeat}/{repeats}"
            print(f"  [{length} tokens] {name:<10} {label:<12} {elapsed:8.3f} s", file=sys.stderr, flush=True)
    return results


def spread(values: list[float], scale: float = 1.0) -> str:
    return f"{scale * statistics.median(values):.3f} ({scale * min(values):.3f}-{scale * max(values):.3f})"


def print_main_table(results: dict[int, dict[str, Result]], lengths: list[int], batch: int) -> None:
    print(f"{'tokens':>6} {'method':<10} {'s/call median (min-max)':>26} {'tokens/s':>10} {'max |gap|':>10} "
          f"{'mean |gap|':>10}")  # fmt: skip
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


def print_scaling_table(results: dict[int, dict[str, Result]], lengths: list[int]) -> None:
    print("scaling: median s per call and ms per token position (= call time / new tokens; flat = linear growth)")
    print(f"{'tokens':>6} " + " ".join(f"{name + ' s':>14} {'ms/tok':>8}" for name in METHODS))
    for length in lengths:
        cells = []
        for name in METHODS:
            res = results[length][name]
            cells.append(
                f"{'skipped':>14} {'':>8}" if res.skipped else f"{res.median:>14.3f} {1e3 * res.median / length:>8.2f}"
            )
        print(f"{length:>6} " + " ".join(cells))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    import transformers
    import trl

    return {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    wrapper_class = load_trl_wrapper()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    setup = build_setup(args)
    samplers = {
        "pilaf_exp": pilaf_sampler(setup),
        "trl-cached": trl_sampler(setup, wrapper_class, use_cache=True),
        "trl-exact": trl_sampler(setup, wrapper_class, use_cache=False),
    }
    lengths = sorted(set(args.new_tokens) | (set(args.scaling_lengths) if args.scaling else set()))
    results: dict[int, dict[str, Result]] = {}
    for length in lengths:
        skip_exact = args.trl_exact_max_tokens is not None and length > args.trl_exact_max_tokens
        active = {name: fn for name, fn in samplers.items() if not (skip_exact and name == "trl-exact")}
        results[length] = measure(setup, active, length, args.repeats, warm_up=length == lengths[0])
        if skip_exact:
            results[length]["trl-exact"] = Result(skipped=True)

    info = versions()
    print(
        f"batch {args.batch}, prompt {args.prompt_length}, vocab {args.vocab}, hidden {args.hidden} x {args.layers} "
        f"layers x {args.heads} heads, fp32, coef {args.coef}, {torch.get_num_threads()} threads, "
        f"{args.repeats} repeats; torch {info['torch']}, transformers {info['transformers']}, trl {info['trl']}"
    )
    print("|gap| = |log-prob the token was sampled from - exact mixture log-prob|, nats, max/mean over all tokens")
    print_main_table(results, sorted(set(args.new_tokens)), args.batch)
    if args.scaling:
        print()
        print_scaling_table(results, sorted(set(args.scaling_lengths)))
    if args.json:
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
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=2)


if __name__ == "__main__":
    main()
