"""What the gradient analysis reads: the samplers (every one in conf/sampler/, and variants with
other settings), the policy to analyse (the SFT model, a `save_pretrained` directory or a run's
Lightning checkpoint) and the exact response table of the test prompts."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from transformers import AutoModelForCausalLM

from pilaf_exp.infra.checkpoints import checkpoint_step
from pilaf_exp.infra.cli import compose_config
from pilaf_exp.infra.errors import ConfigError
from pilaf_exp.sampling.samplers import Sampler

# What fixes the task, the reference and the oracle: a checkpoint's run must agree on each.
WORLD_KEYS = ("task", "model.policy", "model.sft", "oracle", "algo.beta")


@dataclass
class SamplerEntry:
    sampler: Sampler
    config: dict  # its resolved config node, written beside its results


def variant_name(name: str, settings: list[str]) -> str:
    """'pilaf' + ['sampler.coef=0.05'] -> 'pilaf[coef=0.05]'."""
    short = [f"{key.split('.')[-1]}={value}" for key, _, value in (s.partition("=") for s in settings)]
    return f"{name}[{','.join(short)}]" if short else name


def samplers_of(overrides: list[str], names: list[str], variants: list[str]) -> dict[str, SamplerEntry]:
    """Each sampler instantiated from the config as `python -m pilaf_exp <overrides> sampler=<name>` would;
    a variant '[LABEL=]NAME:KEY=VALUE[:KEY=VALUE]' is sampler NAME with the extra settings, reported as
    LABEL (default: NAME[key=value,...])."""
    entries = {}
    wanted = [(name, name, []) for name in names]
    for variant in variants:
        head, *settings = variant.split(":")
        label, _, name = head.rpartition("=")
        if not settings or any("=" not in s for s in settings):
            raise ConfigError(f"--variant {variant}: expected [LABEL=]NAME:KEY=VALUE[:KEY=VALUE]")
        wanted.append((label or variant_name(name, settings), name, settings))
    for label, name, settings in wanted:
        node = compose_config(*overrides, f"sampler={name}", *settings).sampler
        entries[label] = SamplerEntry(instantiate(node), OmegaConf.to_container(node, resolve=True))
    return entries


@dataclass
class Policy:
    model: nn.Module
    label: str  # names the result file: sft, or <run dir>_step<step>
    step: int | None  # training steps behind it (0 for the SFT policy; None when unknown)
    source: str
    run_config: DictConfig | None  # the config of the run that wrote it, when it is beside it


def load_policy(path: Path | None, reference: nn.Module) -> Policy:
    """The SFT policy (None), a run's Lightning checkpoint (`checkpoints/step_*.ckpt`: the `policy.`
    entries of its state_dict) or a `save_pretrained` directory."""
    if path is None:
        return Policy(copy.deepcopy(reference), "sft", 0, "sft", None)
    if path.is_file():
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        state = {
            k.removeprefix("policy."): v for k, v in checkpoint.get("state_dict", {}).items() if k.startswith("policy.")
        }
        if not state:
            raise ConfigError(f"--checkpoint {path}: no 'policy.' weights in its state_dict (not a run's checkpoint?)")
        model = copy.deepcopy(reference)
        model.load_state_dict(state)
        step = checkpoint.get("pilaf", {}).get("run_step", checkpoint_step(path))
    elif (path / "config.json").is_file():
        model, step = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), None
    else:
        raise ConfigError(f"--checkpoint {path}: neither a Lightning checkpoint file nor a save_pretrained directory")
    run = run_dir(path)
    label = f"{run.name}_step{step}" if step is not None else f"{run.name}_{path.name}"
    return Policy(model, label, step, str(path), run_config(path))


def run_dir(path: Path) -> Path:
    """The run a checkpoint belongs to: <run>/checkpoints/step_*.ckpt or <run>/<save_pretrained dir>."""
    return path.parent.parent if path.is_file() else path.parent


def run_config(path: Path | None) -> DictConfig | None:
    """The resolved config of the run beside a checkpoint, when there is one (None for the SFT policy)."""
    config = run_dir(path) / "config_resolved.yaml" if path is not None else None
    return OmegaConf.load(config) if config is not None and config.is_file() else None


def _plain(cfg: DictConfig, key: str):
    value = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


def check_same_world(run_config: DictConfig | None, cfg: DictConfig) -> None:
    """A checkpoint is analysed in the world (task, reference, oracle, beta) it was trained in."""
    if run_config is None:
        return
    differ = [key for key in WORLD_KEYS if _plain(run_config, key) != _plain(cfg, key)]
    if differ:
        raise ConfigError(
            f"the checkpoint's run differs from the composed config in {', '.join(differ)}: pass the run's "
            "overrides on the command line (its config_resolved.yaml has them)"
        )
