"""Experiment loggers."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)


def wandb_logger(
    save_dir: str, project: str, group: str | None = None, tags: list[str] | None = None, **kwargs
) -> WandbLogger:
    """W&B logger, offline unless the user has given a key (WANDB_API_KEY) or set WANDB_MODE.

    The offline run directory (save_dir/wandb/offline-run-*) is real W&B output: upload it
    later with `wandb sync`. The run id is kept in save_dir/wandb/run_id, so a resumed run
    (same output_dir) continues the same W&B run instead of starting a new one.
    """
    mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    id_file = Path(save_dir) / "wandb" / "run_id"
    resuming = id_file.exists()
    run_id = id_file.read_text().strip() if resuming else secrets.token_hex(4)
    if not resuming and rank_zero_only.rank == 0:
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run_id + "\n")

    def make(mode: str, run_id: str) -> WandbLogger:
        return WandbLogger(
            save_dir=save_dir, project=project, group=group, tags=list(tags or []), mode=mode,
            id=run_id, resume="allow", **kwargs,
        )  # fmt: skip

    logger = make(mode, run_id)
    if mode == "online" and rank_zero_only.rank == 0:
        try:
            logger.experiment  # noqa: B018 -- connect now, so a failure is met here and not mid-run
        except Exception as error:  # network, auth, server: W&B must never kill a run
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            log.warning("W&B online is unavailable (%s): logging offline to %s/wandb; upload it later with "
                        "`wandb sync`", reason, save_dir)  # fmt: skip
            run_id = secrets.token_hex(4)  # W&B keeps the failed run's id reserved in this process
            id_file.write_text(run_id + "\n")
            logger = make("offline", run_id)
    return logger
