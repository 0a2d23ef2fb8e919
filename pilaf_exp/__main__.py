"""Entry point: `python -m pilaf_exp [group=option ...] [key=value ...]` (Hydra)."""

from __future__ import annotations

import logging
import sys
import warnings

import hydra
from omegaconf import DictConfig

from pilaf_exp.checks import ConfigError
from pilaf_exp.cli import CONF_DIR, bad_group_choices


def quiet_framework_chatter() -> None:
    """Silence framework notices that say nothing about this run (the run dir is ours to fill,
    the frozen models are in eval mode on purpose, the prompt loader needs no workers)."""
    notices = ("does not have many workers", "module\\(s\\) in eval mode", "Experiment logs directory", "LeafSpec",
               "`srun` command is available")  # fmt: skip
    for message in notices:
        warnings.filterwarnings("ignore", message=f".*{message}.*")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def fail(message: str, code: int = 2) -> None:
    for line in message.splitlines():  # one line per problem
        print(f"error: {line}", file=sys.stderr)
    sys.exit(code)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> dict:
    from pilaf_exp.dpo_module import NonFiniteError
    from pilaf_exp.experiment import run  # heavy imports after argument checks

    quiet_framework_chatter()  # here too: under SLURM/joblib only this function runs in the job
    try:
        return run(cfg)
    except ConfigError as error:
        fail(str(error))
    except NonFiniteError as error:
        fail(str(error), code=1)


def main() -> None:
    problems = bad_group_choices(sys.argv[1:])
    if problems:
        fail("\n".join(problems))
    hydra_main()


if __name__ == "__main__":
    main()
