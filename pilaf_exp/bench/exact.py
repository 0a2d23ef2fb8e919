"""`python -m pilaf_exp.bench.exact`: the exact table's two tree walks, each on its lean path
(`evaluation/leaves.py`) against the same walk through the model's own forward (the fallback for
non-Llama layouts), and the log-prob walk also against copying the KV cache at every level (the code
before its last level read the parents' cache in place). Side by side: alternating calls on the same
prompts, same models, same threads.

Prints seconds per prompt of each, the ratios, and the largest differences.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from pilaf_exp.evaluation import exact
from pilaf_exp.evaluation.exact import response_logprobs, response_rewards
from pilaf_exp.labelling.oracle import RewardOracle
from pilaf_exp.models.builders import seeded_reward_model, tiny_llama
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


@contextlib.contextmanager
def own_forward() -> Iterator[None]:
    """The walks take the fallback (the model's own forward) as they would for a non-Llama layout."""
    lean = exact.lean_reason
    exact.lean_reason = lambda backbone: "the benchmark's fallback"
    try:
        yield
    finally:
        exact.lean_reason = lean


def fallback(walk: Callable) -> Callable:
    def through_own_forward(*args):
        with own_forward():
            return walk(*args)

    return through_own_forward


def compare(walks: dict[str, Callable], model: nn.Module, prompts: Tensor, args: argparse.Namespace) -> None:
    """Time each walk (alternating, medians over repeats) and print it beside the first, with the largest gap."""
    times: dict[str, list[float]] = {name: [] for name in walks}
    for walk in walks.values():  # warm-up: first calls pay for lazy initialisation
        walk(model, prompts[0], args.vocab, args.length)
    for _ in range(args.repeats):
        for name, walk in walks.items():  # alternating, so load changes hit both
            started = time.perf_counter()
            for prompt in prompts:
                walk(model, prompt, args.vocab, args.length)
            times[name].append((time.perf_counter() - started) / len(prompts))
    first, *others = walks
    for name, seconds in times.items():
        runs = ", ".join(f"{s:.3f}" for s in seconds)
        line = f"  {name:34s} {statistics.median(seconds):.3f} s per prompt (runs: {runs})"
        if name != first:
            gap = max(
                float(
                    (walks[first](model, p, args.vocab, args.length) - walks[name](model, p, args.vocab, args.length))
                    .abs()
                    .max()
                )
                for p in prompts
            )
            ratio = statistics.median(seconds) / statistics.median(times[first])
            line += f"; {ratio:.2f}x the lean walk's time, largest difference {gap:.1e}"
        print(line)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=8)
    parser.add_argument("--length", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per repeat (of length 4)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # The default task's shapes: the policy of conf/model/tiny.yaml, the oracle of conf/oracle/embedded.yaml.
    model = tiny_llama(args.vocab, hidden_size=64, num_layers=2, num_heads=4, seed=0).eval()
    oracle = RewardOracle(seeded_reward_model(args.vocab, 64, 2, 4, 32, seed=1), args.vocab).eval()
    prompts = torch.randint(args.vocab, (args.prompts, 4), generator=torch.Generator().manual_seed(0))
    print(f"V={args.vocab} T={args.length} ({args.vocab**args.length:,} responses a prompt), {args.threads} thread(s)")
    print("log pi(y|x), the policy's walk (every exact evaluation, and the table's reference):")
    logprob_walks = {
        "lean (current)": response_logprobs,
        "the model's own forward (fallback)": fallback(response_logprobs),
        "copying the cache (before)": copying_walk,
    }
    compare(logprob_walks, model, prompts, args)
    print("r*(x, y), the oracle's walk one level deeper (the table, once per cache):")
    compare(
        {"lean (current)": response_rewards, "the model's own forward (fallback)": fallback(response_rewards)},
        oracle,
        prompts,
        args,
    )


if __name__ == "__main__":
    main()
