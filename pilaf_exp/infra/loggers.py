"""Experiment loggers: the W&B run of an experiment (config, axes, media), offline unless a key is given."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import WandbLogger

from pilaf_exp.infra import wandb_run
from pilaf_exp.infra.names import GLOBAL_STEP

log = logging.getLogger(__name__)


def wandb_mode() -> str:
    """online when the user has given a key (WANDB_API_KEY), else offline; WANDB_MODE decides when set."""
    return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


class RunLogger(WandbLogger):
    """Lightning's W&B logger with the run's own axes, media and end.

    - Every row is logged at an explicit W&B step that continues the run's earlier processes, with
      `trainer/global_step` = the run's training step; a resumed run does not log again the rows
      it replays from its checkpoint with the values they had. Its offline files then hold one
      history, disjoint in `_step`, which `wandb sync` appends in order.
    - `eval/*` are plotted against `annotations/total` (the paper's x-axis), `eval/J` keeps
      its last and max value in the summary (wandb_run.define_metrics).
    - `finalize("success")` after the run has written summary.json (pilaf_exp.run) logs the
      reward-vs-KL figure, the final table, J*, the gain share and the timing split, then
      finishes the W&B run; Lightning's own finalize at the end of each fit changes nothing, and
      its `finalize("failed")` (an exception or a stop signal in a fit) finishes the run with
      exit code 1, so a process that goes on (a test, a joblib worker) starts its next run afresh.
    """

    def __init__(self, *args: Any, pairs_table_rows: int = 4, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Lightning passes anonymous=None to wandb.init whatever it is given, and W&B warns on any
        # value of that retired setting ("has no effect and will be removed"): leave it unset.
        self._wandb_init.pop("anonymous", None)
        self.pairs_table_rows = pairs_table_rows  # rows of the labelled-pairs table (run_output.wandb_pairs)
        self._next_step: int | None = None
        self._logged_before: set[tuple] = set()  # what the run's earlier processes logged (wandb_run.cell)
        self._finished = False

    @property
    def experiment(self) -> Any:
        fresh = self._experiment is None
        run = super().experiment
        if fresh and rank_zero_only.rank == 0:
            wandb_run.define_metrics(run)
            last, self._logged_before = wandb_run.earlier_history(Path(self.save_dir) / "wandb", run.id)
            self._next_step = max(int(run.step), last + 1)
        return run

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        self.log_media(dict(metrics), step)

    @rank_zero_only
    def log_media(self, data: dict[str, Any], step: int | None = None) -> None:
        """One history row (metrics, wandb.Image, wandb.Table...) at training step `step`."""
        run = self.experiment
        row = data if step is None else {**data, GLOBAL_STEP: step}
        if self._logged_before and all(wandb_run.cell(step, k, v) in self._logged_before for k, v in row.items()):
            return  # a step replayed after a resume, already in the history as it is now
        run.log(row, step=self._next_step, commit=True)
        self._next_step += 1

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        if self._experiment is None or self._finished:
            return
        if status == "failed":  # an exception (or a stop signal) ended the fit: the run may resume later
            self._finished = True
            self.experiment.finish(exit_code=1)
            return
        if status != "success":
            return
        outputs = wandb_run.run_outputs(Path(self.save_dir))
        if outputs is None:  # a fit ended, not the run: summary.json is written after the last one
            return
        media, summary, step = outputs
        self.log_media(media, step)
        self.experiment.summary.update(summary)
        self._finished = True
        self.experiment.finish()


def wandb_logger(
    save_dir: str,
    project: str,
    group: str | None = None,
    job_type: str | None = None,
    name: str | None = None,
    tags: list[str] | None = None,
    pairs_table_rows: int = 4,
    flush_seconds: float = 2.0,
    **kwargs: Any,
) -> RunLogger:
    """The run's W&B logger, offline unless the user has given a key (WANDB_API_KEY) or set WANDB_MODE.

    Its config is the run's resolved config (save_dir/config_resolved.yaml, written before the
    loggers are built) with the group choices and the seed as top-level keys; `group` is the
    experiment, joined in a multirun by the sweep's own id (wandb_run.sweep_group). The offline
    run directory (save_dir/wandb/offline-run-*) is real W&B output: upload it later with
    `wandb sync`. The run id is kept in save_dir/wandb/run_id, so a resumed run (same output_dir)
    continues the same W&B run instead of starting a new one; an unreachable server falls back to
    offline. No key is ever logged: W&B reads it from the environment or its netrc.

    W&B writes the run's `.wandb` log every `flush_seconds` (its own default is 15 s): what a kill -9
    catches unwritten is lost, and a resumed run logs again only the steps after its checkpoint.
    """
    import wandb

    mode = wandb_mode()
    id_file, run_id, group = _run_identity(Path(save_dir), group, job_type)
    config = wandb_run.run_config(Path(save_dir)) if rank_zero_only.rank == 0 else {}

    def make(mode: str, run_id: str) -> RunLogger:
        return RunLogger(
            save_dir=save_dir,
            project=project,
            group=group,
            job_type=job_type,
            name=name,
            tags=list(tags or []),
            mode=mode,
            id=run_id,
            resume="allow",
            config=config,
            pairs_table_rows=pairs_table_rows,
            settings=wandb.Settings(x_transaction_log_flush_interval=flush_seconds),
            **kwargs,
        )

    return _started(make, mode, run_id, id_file, save_dir)


def _started(make: Callable[[str, str], RunLogger], mode: str, run_id: str, id_file: Path, save_dir: str) -> RunLogger:
    """Rank 0 starts the W&B run now, so a failure is met here and not mid-run; an unreachable server
    falls back to offline under a new id (W&B keeps the failed run's id reserved in this process)."""
    logger = make(mode, run_id)
    if rank_zero_only.rank != 0:
        return logger
    try:
        logger.experiment  # noqa: B018 -- starts the run, with its config
    except Exception as error:  # network, auth, server: W&B must never kill a run
        if mode != "online":
            raise
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        log.warning(
            "W&B online is unavailable (%s): logging offline to %s/wandb; upload it later with `wandb sync`",
            reason,
            save_dir,
        )
        run_id = secrets.token_hex(4)
        id_file.write_text(run_id + "\n")
        logger = make("offline", run_id)
    return logger


def _run_identity(save_dir: Path, group: str | None, job_type: str | None) -> tuple[Path, str, str | None]:
    """The run's W&B id (kept in save_dir/wandb/run_id, so a resumed run is the same run) and group."""
    wandb_dir = save_dir / "wandb"
    id_file = wandb_dir / "run_id"
    resuming = id_file.exists()
    run_id = id_file.read_text().strip() if resuming else secrets.token_hex(4)
    group = wandb_run.sweep_group(group, job_type)
    if not resuming and rank_zero_only.rank == 0:
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run_id + "\n")
    if group and rank_zero_only.rank == 0:
        (wandb_dir / "group").write_text(group + "\n")  # the report's W&B run joins this group
    return id_file, run_id, group
