"""Every option of the size, oracle, task and trainer groups composes and resolves, and the
strategies that need Python objects build."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate
from lightning.pytorch.strategies import FSDPStrategy
from omegaconf import OmegaConf
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from pilaf_exp.infra.cli import compose_config
from pilaf_exp.infra.config_checks import problems

PAPER = ["task=hh_rlhf", "oracle=skywork_8b"]


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model=small", *PAPER, "trainer=gpu"],
        ["model=llama3_8b", *PAPER, "trainer=fsdp"],
        ["model=llama3_8b", *PAPER, "trainer=ddp", "trainer.devices=8"],
        ["trainer=ddp_cpu"],
    ],
    ids=["default", "small-1gpu", "8b-fsdp", "8b-ddp", "ddp-cpu"],
)
def test_group_combinations_compose_resolve_and_validate(overrides):
    cfg = compose_config("output_dir=/tmp/x", *overrides)
    for group in ("task", "model", "oracle", "algo", "trainer", "sampler"):  # every interpolation resolves
        OmegaConf.to_container(cfg[group], resolve=True)
    assert problems(cfg) == []


def test_llama3_8b_uses_its_checkpoint_as_the_reference_and_bf16():
    cfg = compose_config("output_dir=/tmp/x", "model=llama3_8b", *PAPER, "trainer=fsdp")
    assert cfg.model.sft.steps == 0 and cfg.model.policy.dtype == "bfloat16"
    assert cfg.trainer.precision == "bf16-true" and cfg.oracle.target_std is None
    assert cfg.algo.batch_size == 8 and cfg.algo.micro_batch_size == 2 and cfg.algo.lr == 5.0e-7


def test_fsdp_strategy_shards_decoder_layers():
    cfg = compose_config("output_dir=/tmp/x", "model=llama3_8b", *PAPER, "trainer=fsdp")
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["use_orig_params"] is True
    assert LlamaDecoderLayer in strategy.kwargs["auto_wrap_policy"]._module_classes
