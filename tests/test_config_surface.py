"""The config surface has no silent rule and no dead key.

Every validation rule checks a key that some option of its group composes to, and every key that
some option composes to is used: a constructor parameter of its node's `_target_`, read by the
package's code, or in ALLOWED below with the reason it is neither.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hydra.utils import get_method
from omegaconf import OmegaConf

from pilaf_exp.config_checks import DATA_FILES, PATHS, RULES
from pilaf_exp.infra.cli import compose_config, group_options

PACKAGE = Path(__file__).resolve().parents[1] / "pilaf_exp"
GROUPS = ("task", "model", "oracle", "oracle/labeler", "sampler", "algo", "trainer", "logger")
GLOBAL_GROUPS = ("experiment", "sweep")  # `# @package _global_` deltas, picked with +group=option
# hydra/launcher/* is not composed here: its keys are read by Hydra's launcher plugins.
INSTANTIATE_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}  # read by hydra.utils.instantiate

# Keys that are neither a constructor parameter nor read by name in pilaf_exp/, with the reason.
ALLOWED: dict[str, str] = {
    "model.precision": "read through ${model.precision} by conf/trainer/_base.yaml (trainer.precision)",
}


def _compositions() -> list[tuple[str, str, tuple[str, ...]]]:
    """(group, option, overrides): the default config, then every option of every group."""
    found = [("config", "default", ())]
    for group in GROUPS:
        found += [(group, option, (f"{group}={option}",)) for option in group_options(group) or []]
    for group in GLOBAL_GROUPS:
        found += [(group, option, (f"+{group}={option}",)) for option in group_options(group) or []]
    return found


COMPOSITIONS = _compositions()
IDS = [f"{group}={option}" for group, option, _ in COMPOSITIONS]


@cache
def composed(overrides: tuple[str, ...]) -> dict[str, Any]:
    """The composed config, unresolved (an option need not resolve next to the default's other choices)."""
    return OmegaConf.to_container(compose_config("output_dir=/tmp/x", *overrides), resolve=False)


def leaves(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Dotted paths of the leaves (lists and empty nodes are leaves)."""
    if isinstance(node, dict) and node:
        for key, child in node.items():
            yield from leaves(child, (*path, str(key)))
    else:
        yield path


def has_key(cfg: dict[str, Any], dotted: str) -> bool:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


@cache
def parameters(target: str) -> frozenset[str]:
    """Named parameters of a `_target_` (a class's constructor or a function); **kwargs names nothing."""
    made = get_method(target)  # a class (its constructor's parameters) or a function
    kinds = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    return frozenset(name for name, p in inspect.signature(made).parameters.items() if p.kind not in kinds)


@cache
def names_read_by_the_package() -> frozenset[str]:
    """Attribute names (`cfg.eval.temperature`) and exact string constants (`["temperature"]`,
    `.get("temperature")`) in pilaf_exp/, docstrings left out. config_checks.py is left out too:
    validating a key is not using it."""
    names = set()
    for file in PACKAGE.rglob("*.py"):
        if file.name == "config_checks.py":
            continue
        tree = ast.parse(file.read_text(), str(file))
        docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
        for n in ast.walk(tree):
            if isinstance(n, ast.Attribute):
                names.add(n.attr)
            elif isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings:
                names.add(n.value)
    return frozenset(names)


def use_of(cfg: dict[str, Any], path: tuple[str, ...]) -> str | None:
    """How the leaf at `path` is used ("instantiate", "parameter", "read", "allowed"), None if not at all."""
    if path[-1] in INSTANTIATE_KEYS:
        return "instantiate"
    node: Any = cfg
    for depth, part in enumerate(path):  # a parameter of the nearest _target_ above it (a whole node can be one)
        if isinstance(node, dict) and isinstance(node.get("_target_"), str) and part in parameters(node["_target_"]):
            return "parameter"
        node = node[part] if depth < len(path) - 1 else None
    if path[-1] in names_read_by_the_package():
        return "read"
    if ".".join(path) in ALLOWED:
        return "allowed"
    return None


@pytest.mark.parametrize("group, rules", RULES.items(), ids=list(RULES))
def test_every_rule_checks_a_key_of_its_group(group, rules):
    keys = [key for key, _, _ in rules]
    if group == "config":  # conf/config.yaml's own keys
        cfg = composed(())
        assert all(has_key(cfg, key) and key.split(".")[0] not in GROUPS for key in keys)
        return
    assert all(key.startswith(f"{group}.") for key in keys), f"rules of {group} name other groups' keys"
    options = [composed((f"{group}={option}",)) for option in group_options(group)]
    missing = [key for key in keys if not any(has_key(cfg, key) for cfg in options)]
    assert missing == [], f"no option of conf/{group}/ has {missing}: the rules check nothing"


def test_every_checked_path_is_a_key_of_some_option():
    everything = [composed(overrides) for _, _, overrides in COMPOSITIONS]
    missing = [key for key in (*PATHS, *DATA_FILES) if not any(has_key(cfg, key) for cfg in everything)]
    assert missing == []


def dead_keys(overrides: tuple[str, ...]) -> list[str]:
    cfg = composed(overrides)
    return [".".join(path) for path in leaves(cfg) if use_of(cfg, path) is None]


@pytest.mark.parametrize("group, option, overrides", COMPOSITIONS, ids=IDS)
def test_no_dead_key(group, option, overrides):
    # A dead key of config.yaml or of a default option is reported once, by config=default.
    dead = [key for key in dead_keys(overrides) if group == "config" or key not in dead_keys(())]
    assert dead == [], (
        f"{group}={option}: {dead} are not a parameter of their node's _target_ and not read by pilaf_exp/: "
        "remove them, read them, or add them to ALLOWED with the reason"
    )


def test_allowed_keys_exist_and_are_needed():
    everything = [composed(overrides) for _, _, overrides in COMPOSITIONS]
    for key in ALLOWED:
        path = tuple(key.split("."))
        holders = [cfg for cfg in everything if has_key(cfg, key)]
        assert holders, f"ALLOWED names {key}, which no option has"
        assert all(use_of(cfg, path) == "allowed" for cfg in holders), f"{key} is used: drop it from ALLOWED"


def test_eval_temperature_is_read_by_the_package():
    assert use_of(composed(()), ("eval", "temperature")) == "read"


def test_a_key_nothing_reads_is_dead():
    cfg = composed(())
    assert use_of(cfg | {"eval": {**cfg["eval"], "unused_knob": 1}}, ("eval", "unused_knob")) is None
    assert use_of(cfg, ("trainer", "accelerator")) == "parameter"
    assert use_of(cfg, ("trainer", "_partial_")) == "instantiate"
