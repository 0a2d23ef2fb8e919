"""Throughput of one full online-DPO step: pilaf_exp's training path against TRL's OnlineDPOTrainer.

    python -m pilaf_exp.bench.online_step [--new-tokens 12 64] [--batch 16] [--steps 20] [--warmup 3]
                                          [--hidden 64] [--layers 2] [--prompt-length 4] [--threads N]
                                          [--samplers vanilla pilaf] [--json PATH]

One step = sample a pair per prompt from the current policy, label it with a reward model, DPO loss,
backward, AdamW update. Measured in labelled pairs per second, per step, warm-up steps discarded.

* pilaf_exp: the package's own path. The real Hydra config is composed (tiny Llama policy, the
  seeded scalar-head reward model as oracle, the embedded task's prompts), `experiment.build` makes
  the parts and `OnlineDPO.fit` runs `OnlineDPOModule` through the Lightning trainer, with sampler
  vanilla (like for like: TRL also draws both responses from the policy) and PILAF. A Lightning
  callback times on_train_batch_start -> on_train_batch_end; the evaluations (step 0 in
  on_train_start, the last step in the module's on_train_batch_end) fall outside that window.
* TRL: `trl.experimental.online_dpo.OnlineDPOTrainer` on the same policy weights and reward model
  (copies of the objects pilaf_exp built), the same prompt set, prompts per step, new tokens, beta,
  learning rate and temperature 1 on the CPU. A TrainerCallback times on_step_begin -> on_step_end.

Printed per method and length: median / min / max seconds per step, pairs/s, pairs/s over TRL's, the
mean tokens per response, and for pilaf_exp the median seconds per step spent sampling, labelling and
writing the pair ledger (durable, fsync'd; TRL has no counterpart). Then the loss and implicit-reward
margin at the first and last timed step and how far the weights moved, to show both really trained.
On a loaded machine `--threads 1` avoids OpenMP stalls that make multi-threaded steps 10-100x slower.

No EOS on either side, so every response is exactly `new_tokens` long: the embedded task has none,
and TRL's tokenizer has an EOS id the 64-token policy cannot emit. The mean response length actually
produced is measured and printed for both. Nothing is downloaded: TRL gets a local character-level
tokenizer (one character per policy token id). The package itself never imports trl; this script
does, and exits 2 with an install hint when it is missing.

The TRL side is `bench_online_trl`; what both sides are built from is `bench_online_common`.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch

from pilaf_exp.bench.online_common import (
    VOCAB,
    Result,
    bench_config,
    build_experiment,
    prompt_alphabet,
    weight_change,
)
from pilaf_exp.bench.online_trl import load_trl, run_trl
from pilaf_exp.infra.ledger import Ledger
from pilaf_exp.infra.names import LABELLING, LEDGER, SAMPLING
from pilaf_exp.infra.quiet import quiet_framework_chatter

# ---------------------------------------------------------------------------------------------- pilaf_exp


class LightningStepTimer(L.Callback):
    """Wall time of each training batch, its loss and margin, and the sampling / labelling share."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.losses: list[float] = []
        self.margins: list[float] = []
        self.phases: dict[str, list[float]] = {SAMPLING: [], LABELLING: [], LEDGER: []}

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.before = self.cumulative(pl_module)
        self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.seconds.append(time.perf_counter() - self.start)
        self.losses.append(float(outputs["loss"]))
        self.margins.append(float(outputs["reward_margin"]))
        after = self.cumulative(pl_module)
        for phase, values in self.phases.items():
            values.append(after.get(phase, 0.0) - self.before.get(phase, 0.0))

    def cumulative(self, pl_module: L.LightningModule) -> dict[str, float]:
        """Seconds per phase so far, from the run's own stopwatch (sampling, labelling, ledger)."""
        return dict(pl_module.run.stopwatch.seconds)


def mean_response_tokens(ledger_dir: Path, first_step: int) -> float:
    """Tokens per sampled response, from the pairs the run wrote to its ledger."""
    lengths = [
        torch.cat([e["pairs"]["mask_a"], e["pairs"]["mask_b"]]).sum(-1).float()
        for e in Ledger(ledger_dir).entries()
        if e["step"] >= first_step
    ]
    return torch.cat(lengths).mean().item()


def run_pilaf(args: argparse.Namespace, sampler: str, new_tokens: int, workdir: Path) -> Result:
    out_dir = workdir / f"pilaf_exp_{sampler}_{new_tokens}"
    cfg = bench_config(args, sampler, new_tokens, out_dir)
    timer = LightningStepTimer()
    parts = build_experiment(cfg, callbacks=[timer])
    fitted = parts.fit()
    timed = slice(args.warmup, None)
    return Result(
        method=f"pilaf_exp {sampler}",
        new_tokens=new_tokens,
        batch=args.batch,
        seconds=timer.seconds[timed],
        losses=timer.losses[timed],
        margins=timer.margins[timed],
        response_tokens=mean_response_tokens(out_dir / "ledger" / "rank_0", args.warmup),
        weight_change=weight_change(fitted.policy, parts.world.reference),
        phases={name: statistics.median(values[timed]) for name, values in timer.phases.items()},
    )


# -------------------------------------------------------------------------------------------------- report


def header(args: argparse.Namespace, trl_settings: dict[str, Any]) -> list[str]:
    import transformers
    import trl

    return [
        f"one online-DPO step, CPU fp32, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"transformers {transformers.__version__}, lightning {L.__version__}, trl {trl.__version__}",
        f"policy: Llama hidden {args.hidden}, {args.layers} layers, vocab {VOCAB}, seeded random init (no SFT); "
        f"reward model: pilaf_exp.models.builders.seeded_reward_model ({trl_settings.get('reward_model')})",
        f"{args.batch} prompts (pairs) per step, prompts of {args.prompt_length} tokens "
        f"(from {prompt_alphabet(args.prompt_length)} of the 64 ids), temperature 1, no EOS; "
        f"{args.steps} timed steps after {args.warmup} warm-up steps",
        "same on both sides: weights, reward model, prompt set (order differs), beta, lr, "
        "AdamW weight decay 0.01, no lr schedule",
        "differs: pilaf_exp labels by Bradley-Terry sampling (package default), TRL by the higher reward; "
        f"TRL clips gradients (max_grad_norm {trl_settings.get('max_grad_norm')}, optim {trl_settings.get('optim')}), "
        "pilaf_exp only checks the norm (torch AdamW); TRL decodes completions to text and re-tokenizes them for "
        "the reward model, pilaf_exp passes token ids; pilaf_exp writes each step's pairs to its ledger (fsync)",
    ]


def table(results: list[Result]) -> list[str]:
    trl_rate = {r.new_tokens: r.pairs_per_second for r in results if r.method == "TRL"}
    lines = [
        f"{'method':<18} {'new tok':>7} {'resp tok':>8} {'median s':>9} {'min s':>8} {'max s':>8} "
        f"{'pairs/s':>8} {'vs TRL':>7}  pilaf_exp sampling / labelling / ledger s",
    ]
    for r in results:
        ratio = r.pairs_per_second / trl_rate[r.new_tokens] if r.new_tokens in trl_rate else float("nan")
        phases = " / ".join(f"{v:.4f}" for v in r.phases.values())
        lines.append(
            f"{r.method:<18} {r.new_tokens:>7} {r.response_tokens:>8.1f} {r.median:>9.4f} {min(r.seconds):>8.4f} "
            f"{max(r.seconds):>8.4f} {r.pairs_per_second:>8.1f} {ratio:>6.2f}x  {phases}"
        )
    return lines


def learning(results: list[Result]) -> list[str]:
    """First and last timed step of each run: the objective moved and the weights changed."""
    return [
        f"{r.method:<18} {r.new_tokens:>3} new tokens: loss {r.losses[0]:.4f} -> {r.losses[-1]:.4f}, "
        f"reward margin {r.margins[0]:+.4f} -> {r.margins[-1]:+.4f}, |theta - theta_0| = {r.weight_change:.4f}"
        for r in results
    ]


def report(args: argparse.Namespace, results: list[Result], trl_settings: dict[str, Any], wall: float) -> None:
    print("\n".join(header(args, trl_settings)))
    print()
    print("\n".join(table(results)))
    print()
    print("\n".join(learning(results)))
    print(
        f"\n'vs TRL': pairs/s over TRL's at the same length (pilaf_exp vanilla is like for like); {wall:.0f} s in all"
    )
    if args.json:
        payload = {
            "args": vars(args),
            "header": header(args, trl_settings),
            "results": [asdict(r) | {"median": r.median, "pairs_per_second": r.pairs_per_second} for r in results],
            "wall_seconds": wall,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))


def quiet() -> None:
    """Keep stdout to the table: no trainer banners, progress or expected warnings."""
    import transformers

    quiet_framework_chatter()
    for name in ("lightning.pytorch", "accelerate"):
        logging.getLogger(name).setLevel(logging.WARNING)
    transformers.logging.set_verbosity_error()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[12, 64], help="tokens per response")
    parser.add_argument("--batch", type=int, default=16, help="prompts (= labelled pairs) per step")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="steps run first and discarded")
    parser.add_argument("--hidden", type=int, default=64, help="policy hidden size (4 heads)")
    parser.add_argument("--layers", type=int, default=2, help="policy layers")
    parser.add_argument("--prompt-length", type=int, default=4)
    parser.add_argument("--samplers", nargs="+", default=["vanilla", "pilaf"], help="pilaf_exp samplers to time")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the raw numbers here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    load_trl()  # fail before anything runs
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    quiet()
    started = time.perf_counter()
    results: list[Result] = []
    trl_settings: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench_online_step_") as tmp:
        for new_tokens in args.new_tokens:
            for sampler in args.samplers:
                results.append(run_pilaf(args, sampler, new_tokens, Path(tmp)))
                print(f"done: pilaf_exp {sampler}, {new_tokens} new tokens", file=sys.stderr, flush=True)
            trl_result, trl_settings = run_trl(args, new_tokens, Path(tmp))
            results.append(trl_result)
            print(f"done: TRL, {new_tokens} new tokens", file=sys.stderr, flush=True)
    report(args, results, trl_settings, time.perf_counter() - started)


if __name__ == "__main__":
    main()
