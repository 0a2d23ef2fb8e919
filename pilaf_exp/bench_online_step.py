"""Throughput of one full online-DPO step: pilaf_exp's training path against TRL's OnlineDPOTrainer.

    python -m pilaf_exp.bench_online_step [--new-tokens 12 64] [--batch 16] [--steps 20] [--warmup 3]
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
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn

from pilaf_exp.checks import validate
from pilaf_exp.cli import CONF_DIR
from pilaf_exp.data import prompt_stream
from pilaf_exp.experiment import Experiment, build
from pilaf_exp.ledger import Ledger

VOCAB = 64  # policy vocabulary (DESIGN.md s.6); the reward model adds one padding id
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"  # one character per token id
MAX_PROMPTS = 2**18  # the embedded task lists every prompt: keep that list small
NO_EVAL = 10**9  # eval_every: no evaluation between the first and the last step
TRL_MISSING = "error: pilaf_exp.bench_online_step needs TRL 1.9.x: pip install -e '.[bench]'"


@dataclass
class Result:
    method: str  # "pilaf_exp vanilla", "pilaf_exp pilaf", "TRL"
    new_tokens: int
    batch: int
    seconds: list[float]  # per timed step
    losses: list[float]  # DPO loss per timed step
    margins: list[float]  # mean implicit-reward margin (chosen - rejected) per timed step
    response_tokens: float  # mean tokens per sampled response over the timed steps
    weight_change: float  # L2 norm of (final - initial) policy weights
    phases: dict[str, float] = field(default_factory=dict)  # median seconds per step of named parts

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def pairs_per_second(self) -> float:
        return self.batch / self.median


# ---------------------------------------------------------------------------------------------- pilaf_exp


class LightningStepTimer(L.Callback):
    """Wall time of each training batch, its loss and margin, and the sampling / labelling share."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.losses: list[float] = []
        self.margins: list[float] = []
        self.phases: dict[str, list[float]] = {"sampling": [], "labelling": [], "ledger": []}
        self.totals: dict[str, float] = defaultdict(float)  # running sums of phases timed here (the ledger)

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
        """Seconds per phase so far: the run's own stopwatch (sampling, labelling) and ours."""
        return {**pl_module.record.stopwatch.seconds, **self.totals}


@contextmanager
def timed_ledger_writes(totals: dict[str, float]) -> Iterator[None]:
    """Add the time of each ledger write (the package stores every step's pairs durably, with an
    fsync, before the gradient step; TRL has no counterpart) to totals["ledger"]."""
    original = Ledger.write

    def write(self: Ledger, step: int, micro: int, entry: dict[str, Any]) -> None:
        start = time.perf_counter()
        try:
            original(self, step, micro, entry)
        finally:
            totals["ledger"] += time.perf_counter() - start

    Ledger.write = write
    try:
        yield
    finally:
        Ledger.write = original


@dataclass
class TimedExperiment(Experiment):
    """The experiment as built, whose trainers also carry the timing callback."""

    callbacks: list = field(default_factory=list)

    def trainer(self, **kwargs: Any) -> L.Trainer:
        return super().trainer(callbacks=self.callbacks, **kwargs)


def prompt_alphabet(prompt_length: int) -> int:
    """Tokens the embedded task draws prompts from: it enumerates alphabet**length prompts."""
    alphabet = VOCAB
    while alphabet > 2 and alphabet**prompt_length > MAX_PROMPTS:
        alphabet -= 1
    return alphabet


def compose_config(args: argparse.Namespace, sampler: str, new_tokens: int, out_dir: Path) -> DictConfig:
    """The package's real config, resized to the benchmark's shapes."""
    positions = args.prompt_length + new_tokens
    overrides = [
        f"sampler={sampler}",
        "logger=csv",  # no W&B
        f"output_dir={out_dir}",
        f"cache_dir={os.environ.get('PILAF_CACHE_DIR', '/tmp/pilaf_bench_cache')}",
        f"seed={args.seed}",
        # Prompts from a smaller alphabet when needed (the task lists them all); the models see 64 ids.
        f"task.vocab_size={prompt_alphabet(args.prompt_length)}",
        f"task.prompt_length={args.prompt_length}",
        f"task.response_length={new_tokens}",
        "task.num_test_prompts=16",  # the (untimed) evaluations at the first and last step stay short
        f"model.policy.vocab_size={VOCAB}",
        f"model.policy.hidden_size={args.hidden}",
        f"model.policy.num_layers={args.layers}",
        f"model.policy.max_positions={positions}",
        f"oracle.model.vocab_size={VOCAB}",
        f"oracle.model.max_positions={positions}",
        "oracle.calibration_prompts=256",
        "model.sft.steps=0",  # the seeded initial weights are the reference: no SFT before the benchmark
        f"model.batch_size={args.batch}",
        f"algo.steps={args.warmup + args.steps}",
        f"algo.eval_every={NO_EVAL}",
        "eval.optimum_prompts=0",
        "checkpoint.every_n_steps=null",
        "trainer.enable_progress_bar=false",
    ]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    validate(cfg)
    return cfg


def build_experiment(cfg: DictConfig) -> Experiment:
    L.seed_everything(int(cfg.seed), verbose=False)  # as experiment.run does before building
    return build(cfg)


def weight_change(policy: nn.Module, initial: nn.Module) -> float:
    after = torch.cat([p.detach().flatten() for p in policy.parameters()])
    before = torch.cat([p.detach().flatten() for p in initial.parameters()])
    return (after - before).norm().item()


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
    cfg = compose_config(args, sampler, new_tokens, out_dir)
    timer = LightningStepTimer()
    built = build_experiment(cfg)
    exp = TimedExperiment(**{name: getattr(built, name) for name in built.__dataclass_fields__}, callbacks=[timer])
    with timed_ledger_writes(timer.totals):
        fitted = instantiate(cfg.algo).fit(exp)
    timed = slice(args.warmup, None)
    return Result(
        method=f"pilaf_exp {sampler}",
        new_tokens=new_tokens,
        batch=args.batch,
        seconds=timer.seconds[timed],
        losses=timer.losses[timed],
        margins=timer.margins[timed],
        response_tokens=mean_response_tokens(out_dir / "ledger" / "rank_0", args.warmup),
        weight_change=weight_change(fitted.policy, exp.reference),
        phases={name: statistics.median(values[timed]) for name, values in timer.phases.items()},
    )


# ---------------------------------------------------------------------------------------------------- TRL


def load_trl() -> tuple[type, type]:
    """TRL's OnlineDPOTrainer and OnlineDPOConfig, or exit 2 with the install hint."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # we know it is experimental
    try:
        from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer
    except ImportError:
        print(TRL_MISSING)
        sys.exit(2)
    return OnlineDPOTrainer, OnlineDPOConfig


def char_tokenizer() -> Any:
    """A local tokenizer for both TRL models: character i <-> token id i, plus <pad> (64, the
    reward model's padding id) and <eos> (65, which the 64-token policy can never emit).
    Characters split individually and join without spaces, so TRL's text round trip
    (decode the completion, re-tokenize prompt + completion for the reward model) keeps the ids."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(ALPHABET)} | {"<pad>": VOCAB, "<eos>": VOCAB + 1}
    tok = Tokenizer(models.WordLevel(vocab))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def as_text(ids: Tensor) -> list[str]:
    return ["".join(ALPHABET[i] for i in row) for row in ids.tolist()]


def recording(trainer_class: type) -> type:
    """TRL's trainer, unchanged, that also keeps each step's loss, margin and response lengths."""

    class RecordingOnlineDPOTrainer(trainer_class):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.losses: list[float] = []
            self.margins: list[float] = []
            self.response_tokens: list[float] = []

        def _generate(self, model: nn.Module, prompts: list, images: Any = None) -> tuple[Tensor, ...]:
            out = super()._generate(model, prompts, images)
            self.response_tokens.append(out[3].sum(-1).float().mean().item())  # completion mask [2B, T]
            return out

        def training_step(self, model: nn.Module, inputs: dict, num_items_in_batch: Any = None) -> Tensor:
            loss = super().training_step(model, inputs, num_items_in_batch)
            self.losses.append(loss.item())
            self.margins.append(self.stats["rewards/margins"][-1])
            return loss

    return RecordingOnlineDPOTrainer


def hf_step_timer() -> Any:
    from transformers import TrainerCallback

    class HFStepTimer(TrainerCallback):
        """Wall time of each optimizer step: generation, rewards, loss, backward, clip, AdamW."""

        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.seconds.append(time.perf_counter() - self.start)

    return HFStepTimer()


def run_trl(args: argparse.Namespace, new_tokens: int, workdir: Path) -> tuple[Result, dict[str, Any]]:
    trainer_class, config_class = load_trl()
    import datasets
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    # The same weights, reward model and prompts as the pilaf_exp runs: build them the same way.
    exp = build_experiment(compose_config(args, "vanilla", new_tokens, workdir / f"trl_build_{new_tokens}"))
    policy = exp.new_policy()
    initial = copy.deepcopy(exp.reference)
    reward_model = copy.deepcopy(exp.oracle.model)  # raw scores: the oracle's affine calibration keeps the order
    steps = args.warmup + args.steps
    # The prompts pilaf_exp's runs train on (its seeded stream); TRL's own sampler shuffles their order.
    prompts = torch.cat([ids for ids, _ in prompt_stream(exp.task.train, args.batch, steps, exp.seed)])
    tokenizer = char_tokenizer()
    text = as_text(prompts)
    if tokenizer(text, add_special_tokens=False)["input_ids"] != prompts.tolist():
        raise RuntimeError("the character tokenizer does not give back the prompt token ids")
    config = config_class(
        output_dir=str(workdir / f"trl_{new_tokens}"),
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        max_steps=steps,
        learning_rate=float(exp.cfg.algo.lr),  # explicit: TRL's default is 5e-7
        lr_scheduler_type="constant",  # pilaf_exp: plain AdamW, no schedule
        weight_decay=0.01,  # torch AdamW's default, which pilaf_exp uses
        beta=float(exp.cfg.algo.beta),
        temperature=1.0,  # TRL's default is 0.9
        max_new_tokens=new_tokens,
        max_length=args.prompt_length + new_tokens,  # no left truncation of the prompt
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_steps=int(exp.cfg.trainer.log_every_n_steps),  # as often as pilaf_exp's Lightning logger
        disable_tqdm=True,
        dataloader_pin_memory=False,
        seed=args.seed,
    )
    timer = hf_step_timer()
    trainer = recording(trainer_class)(
        model=policy,
        reward_funcs=reward_model,
        args=config,
        train_dataset=datasets.Dataset.from_dict({"prompt": text}),
        processing_class=tokenizer,
        reward_processing_classes=char_tokenizer(),
        callbacks=[timer],
    )
    for quiet in (PrinterCallback, ProgressCallback):  # the logs would go to stdout
        trainer.remove_callback(quiet)
    trainer.train()
    timed = slice(args.warmup, None)
    result = Result(
        method="TRL",
        new_tokens=new_tokens,
        batch=args.batch,
        seconds=timer.seconds[timed],
        losses=trainer.losses[timed],
        margins=trainer.margins[timed],
        response_tokens=statistics.mean(trainer.response_tokens[timed]),
        weight_change=weight_change(trainer.model, initial),
    )
    optim = trainer.args.optim
    oracle = exp.cfg.oracle.model
    settings = {
        "optim": getattr(optim, "value", optim),
        "max_grad_norm": trainer.args.max_grad_norm,
        "reward_model": f"Llama hidden {oracle.hidden_size}, {oracle.num_layers} layers, scalar head",
    }
    return result, settings


# -------------------------------------------------------------------------------------------------- report


def header(args: argparse.Namespace, trl_settings: dict[str, Any]) -> list[str]:
    import transformers
    import trl

    return [
        f"one online-DPO step, CPU fp32, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"transformers {transformers.__version__}, lightning {L.__version__}, trl {trl.__version__}",
        f"policy: Llama hidden {args.hidden}, {args.layers} layers, vocab {VOCAB}, seeded random init (no SFT); "
        f"reward model: pilaf_exp.models.seeded_reward_model ({trl_settings.get('reward_model')})",
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
    import datasets
    import transformers

    for name in ("lightning.pytorch", "lightning.fabric", "accelerate"):
        logging.getLogger(name).setLevel(logging.WARNING)
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()  # the package saves each run's preference pairs
    expected = [
        "does not have many workers", "in eval mode", "Experiment logs dir", "srun", "LeafSpec", "logging interval",
        "checkpointing` is deprecated",  # TRL's config still sets transformers' old gradient_checkpointing name
    ]  # fmt: skip
    warnings.filterwarnings("ignore", message=f".*({'|'.join(expected)}).*")


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
