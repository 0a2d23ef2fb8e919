"""The one list of framework notices that say nothing about a run, silenced by the CLI, the
benchmarks and the tests alike."""

from __future__ import annotations

import logging
import warnings

# Each a fragment of the warning's message: the run directory is ours to fill, the frozen models
# are in eval mode on purpose, the prompt loader needs no workers, Lightning's SLURM and logging-
# interval hints, torch's pytree notice, and TRL's config setting transformers' old
# gradient-checkpointing name (benchmarks only).
NOTICES = (
    "does not have many workers",
    "module\\(s\\) in eval mode",
    "Experiment logs dir",
    "LeafSpec",
    "`srun` command is available",
    "logging interval",
    "checkpointing` is deprecated",
)
LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda", "lightning.fabric")


def quiet_framework_chatter() -> None:
    for message in NOTICES:
        warnings.filterwarnings("ignore", message=f".*{message}.*")
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
