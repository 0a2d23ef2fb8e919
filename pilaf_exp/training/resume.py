"""Where a run starts: the latest readable checkpoint (resume=auto) or nothing, and putting the
policy, the run record and the random states back as they were."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from pilaf_exp.infra.checkpoints import Checkpointer, restore_rng_states
from pilaf_exp.infra.errors import ConfigError
from pilaf_exp.training.record import RunRecord


def latest_checkpoint(checkpointer: Checkpointer, resume: bool) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to continue from; with resume=never, checkpoints in the way are an error."""
    if not resume:
        if checkpointer.saved():
            raise ConfigError(f"resume=never but {checkpointer.directory} holds checkpoints: choose another output_dir")
        return None
    return checkpointer.latest()


def resume_from(policy: nn.Module, record: RunRecord, resumed: tuple[Path, dict[str, Any]]) -> int:
    """Continue from `resumed` (`latest_checkpoint`'s answer): restore it and note where the run
    resumed from in the record; return the run's step there."""
    path, checkpoint = resumed
    step = restore(policy, record, checkpoint)
    record.run_info["resumed_from"] = f"{path} (step {step})"
    return step


def restore(policy: nn.Module, record: RunRecord, checkpoint: dict[str, Any]) -> int:
    """Load a checkpoint's policy weights, run record and random states; return its step."""
    prefix = "policy."
    policy.load_state_dict({k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)})
    saved = checkpoint["pilaf"]
    record.load_state(saved["record"])
    record.step_offset = saved["run_step"]
    restore_rng_states(saved["rng"])
    return saved["run_step"]
