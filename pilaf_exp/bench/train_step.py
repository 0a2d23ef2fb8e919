"""`python -m pilaf_exp.bench.train_step`: how much of one online-DPO training step is arithmetic.

The step's parts as `training.module.DPOModule.loss` runs them (the policy's log-probs with
autograd and its backward, the frozen reference's log-probs under inference mode, the AdamW step)
on the default shape (tiny Llama, prompts of 4 and responses of 6 tokens), timed at the run's
batch (64 pairs: 128 sequences) and at 1 pair, alternating. At 1 pair a part costs almost only its
fixed per-call cost (Python, dispatch, autograd bookkeeping); the rest of the 64-pair time grows
with the batch, i.e. is arithmetic that a faster framework path would not remove.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from pilaf_exp.models.builders import tiny_llama
from pilaf_exp.models.logprobs import sequence_logprob
from pilaf_exp.training.dpo import dpo_loss


def step_parts(pairs: int, vocab: int, seed: int = 0) -> dict[str, Callable[[], None]]:
    """The parts of one DPO step on `pairs` pairs, each a closure over the same models and batch."""
    policy, reference = tiny_llama(vocab, seed=seed).train(), tiny_llama(vocab, seed=seed + 1).eval()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4, weight_decay=0.0)
    rows = 2 * pairs  # [chosen; rejected]
    generator = torch.Generator().manual_seed(seed)
    prompts, responses = (torch.randint(vocab, (rows, n), generator=generator) for n in (4, 6))
    masks = torch.ones_like(prompts), torch.ones_like(responses)
    with torch.inference_mode():
        reference_logp = sequence_logprob(reference, prompts, masks[0], responses, masks[1]).clone()

    def policy_forward_backward() -> None:
        logp = sequence_logprob(policy, prompts, masks[0], responses, masks[1])
        loss, _ = dpo_loss(*logp.chunk(2), *reference_logp.chunk(2), 0.1)
        loss.backward()

    @torch.inference_mode()
    def reference_forward() -> None:
        sequence_logprob(reference, prompts, masks[0], responses, masks[1])

    def optimizer_step() -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)

    policy_forward_backward()  # gradients exist before the first optimizer step is timed
    return {
        "policy forward+backward": policy_forward_backward,
        "reference forward": reference_forward,
        "AdamW step": optimizer_step,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64, help="pairs per step (the run's algo.batch_size)")
    parser.add_argument("--vocab", type=int, default=8)
    parser.add_argument("--calls", type=int, default=50, help="calls per part per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="1: what each job of a 2-job sweep has")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    batches = {args.pairs: step_parts(args.pairs, args.vocab), 1: step_parts(1, args.vocab)}
    ms: dict[tuple[int, str], list[float]] = {}
    for _ in range(args.repeats):
        for pairs, parts in batches.items():  # alternating, so load changes hit both batch sizes
            for name, part in parts.items():
                started = time.perf_counter()
                for _ in range(args.calls):
                    part()
                ms.setdefault((pairs, name), []).append(1e3 * (time.perf_counter() - started) / args.calls)
    print(f"threads {args.threads}; ms per call, median of {args.repeats} repeats of {args.calls} calls")
    print(f"{'part':<26}{f'{args.pairs} pairs':>12}{'1 pair':>10}{'fixed share':>13}")
    totals = [0.0, 0.0]
    for name in batches[1]:
        full, one = (statistics.median(ms[(pairs, name)]) for pairs in (args.pairs, 1))
        totals = [totals[0] + full, totals[1] + one]
        print(f"{name:<26}{full:>12.2f}{one:>10.2f}{one / full:>12.0%}")
    print(f"{'step':<26}{totals[0]:>12.2f}{totals[1]:>10.2f}{totals[1] / totals[0]:>12.0%}")


if __name__ == "__main__":
    main()
