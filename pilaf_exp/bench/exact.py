"""`python -m pilaf_exp.bench.exact`: the exact evaluation's tree walk (`evaluation.exact.response_logprobs`)
against the same walk copying the KV cache at every level (the code before its last level read the
parents' cache in place), side by side: alternating calls on the same prompts, same model, same threads.

Prints seconds per prompt of each, their ratio, and the largest difference in log-probs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from pilaf_exp.evaluation.exact import response_logprobs
from pilaf_exp.models.builders import tiny_llama
from pilaf_exp.sampling.engines import cache_argument


@torch.inference_mode()
def copying_walk(model: nn.Module, prompt: Tensor, vocab: int, length: int) -> Tensor:
    """The baseline: every level copies each prefix's cache V times, then appends one token to each copy."""
    cache, argument = DynamicCache(), cache_argument(model)
    logits = model(input_ids=prompt[None], use_cache=True, **{argument: cache}).logits[:, -1]
    logp = torch.zeros(1)
    for depth in range(length):
        logp = (logp[:, None] + torch.log_softmax(logits.float(), dim=-1)).flatten()
        if depth == length - 1:
            return logp
        cache.batch_repeat_interleave(vocab)
        tokens = torch.arange(vocab).repeat(len(logp) // vocab)[:, None]
        positions = torch.full((len(logp), 1), prompt.shape[0] + depth)
        logits = model(input_ids=tokens, position_ids=positions, use_cache=True, **{argument: cache}).logits[:, -1]
    raise ValueError("length must be >= 1")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=8)
    parser.add_argument("--length", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per repeat (of length 4)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # The default task's policy shape (conf/model/tiny.yaml): hidden 64, 2 layers, 4 heads.
    model = tiny_llama(args.vocab, hidden_size=64, num_layers=2, num_heads=4, seed=0).eval()
    prompts = torch.randint(args.vocab, (args.prompts, 4), generator=torch.Generator().manual_seed(0))
    walks = {"in place (current)": response_logprobs, "copying (before)": copying_walk}
    times: dict[str, list[float]] = {name: [] for name in walks}
    for walk in walks.values():  # warm-up: first calls pay for lazy initialisation
        walk(model, prompts[0], args.vocab, args.length)
    for _ in range(args.repeats):
        for name, walk in walks.items():  # alternating, so load changes hit both
            started = time.perf_counter()
            for prompt in prompts:
                walk(model, prompt, args.vocab, args.length)
            times[name].append((time.perf_counter() - started) / len(prompts))
    gap = max(
        float(
            (response_logprobs(model, p, args.vocab, args.length) - copying_walk(model, p, args.vocab, args.length))
            .abs()
            .max()
        )
        for p in prompts
    )
    print(f"V={args.vocab} T={args.length} ({args.vocab**args.length:,} responses a prompt), {args.threads} thread(s)")
    for name, seconds in times.items():
        runs = ", ".join(f"{s:.3f}" for s in seconds)
        print(f"  {name:20s} {statistics.median(seconds):.3f} s per prompt (runs: {runs})")
    ratio = statistics.median(times["copying (before)"]) / statistics.median(times["in place (current)"])
    print(f"  speed-up {ratio:.2f}x; largest log-prob difference {gap:.1e}")


if __name__ == "__main__":
    main()
