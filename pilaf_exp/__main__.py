"""Entry point: `python -m pilaf_exp [group=option ...] [key=value ...]` (Hydra)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from pilaf_exp.infra.cli import CONF_DIR, bad_group_choices
from pilaf_exp.infra.errors import ConfigError


def fail(message: str, code: int = 2) -> None:
    for line in message.splitlines():  # one line per problem
        print(f"error: {line}", file=sys.stderr)
    sys.exit(code)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> dict:
    from pilaf_exp.infra.quiet import quiet_framework_chatter  # heavy imports after argument checks
    from pilaf_exp.run import run
    from pilaf_exp.training.module import NonFiniteError

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
