"""Command-line checks made before Hydra composes anything (so nothing is written on error)."""

from __future__ import annotations

from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def group_options(group: str, conf_dir: Path = CONF_DIR) -> list[str] | None:
    """Options of a config group (e.g. 'sampler' or 'oracle/labeler'), None if not a group."""
    folder = conf_dir / group
    if not folder.is_dir():
        return None
    return sorted(p.stem for p in folder.glob("*.yaml"))


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
        values = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
        for value in values:
            if value not in options and value != "null":
                messages.append(f"{group}={value} is not a known {group}; accepted: {', '.join(options)}")
    return messages
