"""The config directory, its groups and their options, checks of the command line made before
Hydra composes anything (so nothing is written on error), and composing the config from Python."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, open_dict

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
BASELINE_SAMPLER = "vanilla"  # the paper's baseline: first in every table, the reference of comparisons


def group_options(group: str, conf_dir: Path = CONF_DIR) -> list[str] | None:
    """Options of a config group (e.g. 'sampler' or 'oracle/labeler'), None if not a group.
    Files starting with '_' are shared parts of a group's options, not options."""
    folder = conf_dir / group
    if not folder.is_dir():
        return None
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_"))


def sampler_names(conf_dir: Path = CONF_DIR) -> list[str]:
    """Every sampler, discovered from conf/sampler/: the baseline first, then alphabetical
    (which is the paper's order: vanilla, best_of_n, hybrid, pilaf)."""
    names = group_options("sampler", conf_dir) or []
    return sorted(names, key=lambda name: (name != BASELINE_SAMPLER, name))


def sampler_order(names: Iterable[str]) -> list[str]:
    """The report's order of any sampler names (each once): the configured samplers as `sampler_names`
    orders them, a variant ('pilaf[coef=0.05]') just after its base, others after them alphabetically.
    Every table, figure and comparison lists samplers in this order."""
    known = sampler_names()

    def key(name: str) -> tuple:
        base = name.split("[")[0]
        return (known.index(base) if base in known else len(known), base, name != base, name)

    return sorted(set(names), key=key)


def bad_group_choices(args: list[str], conf_dir: Path = CONF_DIR) -> list[str]:
    """One message per command-line override that picks an option a group does not have."""
    overrides = [a for a in args if not a.startswith("-") and "=" in a]
    messages = []
    for override in OverridesParser.create().parse_overrides(overrides):
        group = override.key_or_group
        options = group_options(group, conf_dir)
        # hydra/* groups also take options from installed plugins (joblib, submitit): Hydra checks those.
        if options is None or override.is_delete() or group.startswith("hydra/"):
            continue
        if override.is_sweep_override() and "glob(" in override.input_line:
            continue  # Hydra expands globs over the group's own files
        values = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
        for value in values:
            if value not in options and value != "null":
                messages.append(f"{group}={value} is not a known {group}; accepted: {', '.join(options)}")
    return messages


def compose_config(*overrides: str) -> DictConfig:
    """The config exactly as `python -m pilaf_exp <overrides>` composes it, for tests and benchmarks
    (Hydra's runtime facts, such as each group's choice, resolve as they do under the CLI)."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg
