"""Shared fixtures: the *real* composed config, shrunk so a run takes seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import DictConfig

from pilaf_exp.infra.cli import compose_config
from pilaf_exp.infra.quiet import NOTICES, quiet_framework_chatter

# A short online run: enough steps for the policy to move, small enough for CI.
SMALL = [
    "eval.exact_prompts=0",
    "logger=csv",
    "task.num_test_prompts=64",
    "oracle.calibration_prompts=256",
    "trainer.enable_progress_bar=false",
]

# Per algorithm, since each has its own keys.
SMALL_ALGO = {
    "online": ["algo.steps=20", "algo.batch_size=16", "algo.eval_every=10"],
    "iterative": ["algo.iterations=2", "algo.prompts_per_iteration=128", "algo.batch_size=16", "algo.eval_every=4"],
}

quiet_framework_chatter()


def pytest_configure(config: pytest.Config) -> None:
    # pytest records every warning inside a test unless its own filters say otherwise: the same list.
    for message in NOTICES:
        config.addinivalue_line("filterwarnings", f"ignore:.*{message}.*")


@pytest.fixture(scope="session")
def sft_cache(tmp_path_factory) -> Path:
    """One SFT reference for the whole session (the cache is keyed by config)."""
    return tmp_path_factory.mktemp("sft_cache")


@pytest.fixture
def small_cfg(tmp_path: Path, sft_cache: Path):
    """small_cfg(*overrides, out=dir) -> a shrunk config writing into its own run directory."""

    def make(*overrides: str, out: Path | None = None) -> DictConfig:
        algo = next((o.split("=")[1] for o in overrides if o.startswith("algo=")), "online")
        shrink = [*SMALL, *SMALL_ALGO[algo]]
        return compose_config(f"output_dir={out or tmp_path / 'run'}", f"cache_dir={sft_cache}", *shrink, *overrides)

    return make


@pytest.fixture
def subprocess_env(sft_cache: Path) -> dict[str, str]:
    """Environment for `python -m pilaf_exp` subprocesses: shared SFT cache, W&B offline."""
    return {**os.environ, "PILAF_CACHE_DIR": str(sft_cache), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


@pytest.fixture
def offline(monkeypatch):
    """W&B offline in this process; no run left open for the next test."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    yield
    wandb.teardown()
