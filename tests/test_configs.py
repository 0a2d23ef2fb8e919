"""Every option of the size, oracle, task and trainer groups composes and resolves, the paper's
presets (+experiment=paper_small / paper_8b) set the paper's setting, and the strategies that need
Python objects build."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate
from lightning.pytorch.strategies import FSDPStrategy
from omegaconf import OmegaConf
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from pilaf_exp.config_checks import problems
from pilaf_exp.infra.cli import compose_config, group_options

PAPER = ["task=hh_rlhf", "oracle=skywork_8b"]
GROUPS = ("task", "model", "oracle", "algo", "trainer", "sampler", "logger")


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model=small", *PAPER, "trainer=gpu"],
        ["model=llama3_8b", *PAPER, "trainer=fsdp"],
        ["model=llama3_8b", *PAPER, "trainer=ddp", "trainer.devices=8"],
        ["trainer=ddp_cpu"],
        ["trainer=fsdp_cpu"],
    ],
    ids=["default", "small-1gpu", "8b-fsdp", "8b-ddp", "ddp-cpu", "fsdp-cpu"],
)
def test_group_combinations_compose_resolve_and_validate(overrides):
    cfg = compose_config("output_dir=/tmp/x", *overrides)
    for group in GROUPS:  # every interpolation resolves
        OmegaConf.to_container(cfg[group], resolve=True)
    assert problems(cfg) == []


@pytest.mark.parametrize("preset", ["paper_small", "paper_8b"])
@pytest.mark.parametrize("algo", [[], ["algo=iterative"]], ids=["online", "iterative"])
def test_paper_presets_compose_resolve_and_validate(preset, algo):
    cfg = compose_config("output_dir=/tmp/x", f"+experiment={preset}", *algo)
    for group in GROUPS:
        OmegaConf.to_container(cfg[group], resolve=True)
    assert cfg.experiment_name is None  # the report groups the runs by algorithm
    assert problems(cfg) == []


def test_paper_small_preset_is_the_one_gpu_setting():
    cfg = compose_config("output_dir=/tmp/x", "+experiment=paper_small")
    assert cfg.model.policy.path == "Qwen/Qwen2.5-0.5B" and cfg.model.sft.steps > 0
    assert cfg.oracle.model.path == "Skywork/Skywork-Reward-Llama-3.1-8B"
    assert cfg.task._target_ == "pilaf_exp.data.hh_rlhf.HHRLHFTask"
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.devices == 1
    assert cfg.algo.batch_size == 64 and cfg.algo.micro_batch_size == 16 and cfg.algo.lr == 1.0e-6
    assert problems(cfg) == []


def test_llama3_8b_uses_its_checkpoint_as_the_reference_and_bf16():
    cfg = compose_config("output_dir=/tmp/x", "+experiment=paper_8b")
    assert cfg.model.policy.path == "meta-llama/Llama-3.1-8B"
    assert cfg.model.sft.steps == 0 and cfg.model.policy.dtype == "bfloat16"
    assert cfg.trainer.precision == "bf16-true" and cfg.oracle.target_std is None
    assert cfg.trainer.strategy._target_.endswith("fsdp_strategy") and cfg.trainer.devices == 8
    assert cfg.algo.batch_size == 8 and cfg.algo.micro_batch_size == 2 and cfg.algo.lr == 5.0e-7
    assert problems(cfg) == []


def test_the_command_line_overrides_a_preset():
    cfg = compose_config("output_dir=/tmp/x", "+experiment=paper_8b", "model=small", "algo.lr=1e-5")
    assert cfg.model.policy.path == "Qwen/Qwen2.5-0.5B" and cfg.algo.lr == 1e-5 and cfg.algo.batch_size == 8


def test_batch_sizes_and_learning_rate_live_in_algo_only():
    for model in group_options("model"):
        cfg = compose_config("output_dir=/tmp/x", f"model={model}")
        assert not {"batch_size", "micro_batch_size", "lr"} & set(cfg.model), model
    for algo in group_options("algo"):
        cfg = compose_config("output_dir=/tmp/x", f"algo={algo}")
        assert (cfg.algo.batch_size, cfg.algo.micro_batch_size, cfg.algo.lr) == (64, None, 3.0e-4)


@pytest.mark.parametrize("trainer", group_options("trainer"))
def test_every_trainer_starts_from_the_shared_base(trainer):
    cfg = compose_config("output_dir=/tmp/x", f"trainer={trainer}")
    shared = {"_target_": "lightning.Trainer", "_partial_": True, "enable_checkpointing": False}
    assert shared.items() <= OmegaConf.to_container(cfg.trainer).items()
    assert cfg.trainer.precision == cfg.model.precision
    assert not OmegaConf.is_missing(cfg.trainer, "accelerator") and not OmegaConf.is_missing(cfg.trainer, "devices")


def test_default_logger_is_csv_plus_wandb():
    default = compose_config("output_dir=/tmp/x").logger
    csv = compose_config("output_dir=/tmp/x", "logger=csv").logger
    assert list(default) == ["csv", "wandb"] and list(csv) == ["csv"]
    assert default.csv == csv.csv


def test_fsdp_strategy_shards_decoder_layers():
    cfg = compose_config("output_dir=/tmp/x", "+experiment=paper_8b")
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["use_orig_params"] is True
    assert strategy.layer is LlamaDecoderLayer  # with each whole model: training/strategies.py


@pytest.mark.parametrize("trainer", ["fsdp", "fsdp_cpu"])
@pytest.mark.parametrize("engine", ["stacked", "separate"])
def test_a_lean_decode_engine_under_fsdp_is_one_line(trainer, engine):
    cfg = compose_config("output_dir=/tmp/x", f"trainer={trainer}", f"model.generation.engine={engine}")
    (line,) = problems(cfg)
    assert line.startswith(f"model.generation.engine={engine!r} reads whole weight matrices") and "auto" in line
    assert problems(compose_config("output_dir=/tmp/x", f"trainer={trainer}", "model.generation.engine=auto")) == []
