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
A benchmark to run by hand (it needs TRL: pip install -e '.[bench]'), not a test. The command line
and the printed / JSON report live in `bench.mixture_report`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pilaf_exp.bench.mixture_report import (
    Result,
    parse_args,
    print_header,
    print_main_table,
    print_scaling_table,
    versions,
    write_json,
)
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


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv, __doc__.splitlines()[0])
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
    print_header(args, info)
    print_main_table(results, sorted(set(args.new_tokens)), args.batch)
    if args.scaling:
        print()
        print_scaling_table(results, sorted(set(args.scaling_lengths)), METHODS)
    if args.json:
        write_json(args.json, args, info, results)


if __name__ == "__main__":
    main()
