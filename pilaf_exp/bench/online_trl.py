"""The TRL side of `bench_online_step`: `trl.experimental.online_dpo.OnlineDPOTrainer` on copies of
the policy and reward model pilaf_exp builds, with a local character tokenizer (nothing downloaded)."""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from pilaf_exp.bench.online_common import VOCAB, Result, bench_config, build_experiment, weight_change
from pilaf_exp.build import initial_policy
from pilaf_exp.data.stream import prompt_stream

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"  # one character per token id
TRL_MISSING = "error: pilaf_exp.bench.online_step needs TRL 1.9.x: pip install -e '.[bench]'"


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


def trl_config(config_class: type, args: argparse.Namespace, cfg: DictConfig, new_tokens: int, workdir: Path) -> Any:
    """TRL's OnlineDPOConfig matched to the pilaf_exp run of `cfg`: every setting where TRL's default
    differs from what pilaf_exp does is spelled out, so both sides train the same way on the CPU."""
    return config_class(
        output_dir=str(workdir / f"trl_{new_tokens}"),
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        max_steps=args.warmup + args.steps,  # warm-up steps are trained too, then discarded from the timing
        learning_rate=float(cfg.algo.lr),  # explicit: TRL's default is 5e-7
        lr_scheduler_type="constant",  # pilaf_exp: plain AdamW, no schedule
        weight_decay=0.01,  # torch AdamW's default, which pilaf_exp uses
        beta=float(cfg.algo.beta),
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
        logging_steps=int(cfg.trainer.log_every_n_steps),  # as often as pilaf_exp's Lightning logger
        disable_tqdm=True,
        dataloader_pin_memory=False,
        seed=args.seed,
    )


def run_trl(args: argparse.Namespace, new_tokens: int, workdir: Path) -> tuple[Result, dict[str, Any]]:
    trainer_class, config_class = load_trl()
    import datasets
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    # The same weights, reward model and prompts as the pilaf_exp runs: build them the same way.
    cfg = bench_config(args, "vanilla", new_tokens, workdir / f"trl_build_{new_tokens}")
    world = build_experiment(cfg).world
    policy = initial_policy(cfg, world.reference)
    initial = copy.deepcopy(world.reference)
    reward_model = copy.deepcopy(world.oracle.model)  # raw scores: the oracle's affine calibration keeps the order
    steps = args.warmup + args.steps
    # The prompts pilaf_exp's runs train on (its seeded stream); TRL's own sampler shuffles their order.
    prompts = torch.cat([ids for ids, _ in prompt_stream(world.task.train, args.batch, steps, int(cfg.seed))])
    tokenizer = char_tokenizer()
    text = as_text(prompts)
    if tokenizer(text, add_special_tokens=False)["input_ids"] != prompts.tolist():
        raise RuntimeError("the character tokenizer does not give back the prompt token ids")
    config = trl_config(config_class, args, cfg, new_tokens, workdir)
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
    oracle = cfg.oracle.model
    settings = {
        "optim": getattr(optim, "value", optim),
        "max_grad_norm": trainer.args.max_grad_norm,
        "reward_model": f"Llama hidden {oracle.hidden_size}, {oracle.num_layers} layers, scalar head",
    }
    return result, settings
