"""The config surface has no silent rule and no dead key.

Every validation rule checks a key that some option of its group composes to, and every key that
some option composes to is used: a constructor parameter of its node's `_target_`, read by another
yaml's interpolation, read by the package's code under its own node's name (`cfg.eval.seed`,
`ev.seed` after `ev = cfg.eval`: a read of `algo.seed` does not make `eval.seed` live), or in
ALLOWED below with the reason it is none of these.
"""

from __future__ import annotations

import ast
import inspect
import re
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
    "choices.model": "a top-level W&B config key (infra/wandb_run.CHOICES: read by name from a tuple)",
    "choices.task": "a top-level W&B config key (infra/wandb_run.CHOICES: read by name from a tuple)",
    "choices.oracle": "a top-level W&B config key (infra/wandb_run.CHOICES: read by name from a tuple)",
    "choices.trainer": "a top-level W&B config key (infra/wandb_run.CHOICES: read by name from a tuple)",
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


def _held_node(value: ast.AST) -> str | None:
    """The config node an expression evaluates to, by name: `cfg.eval` or `cfg.get("eval")` -> "eval"."""
    if isinstance(value, ast.BoolOp):  # `cfg.get("eval") or {}`
        value = value.values[0]
    if isinstance(value, ast.Attribute):
        return value.attr
    if (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Attribute)
        and value.func.attr == "get"
        and (value.args and isinstance(value.args[0], ast.Constant))
    ):
        return str(value.args[0].value)
    return None


def _reads(tree: ast.AST) -> tuple[set[str], set[str]]:
    """(names, pairs) read in one module: every attribute name and string constant (the loose rule
    for top-level keys), and "parent.leaf" for each read of `leaf` on a node named `parent`:
    `cfg.eval.temperature`, `ev.temperature` after `ev = cfg.eval`, `node.get("leaf")`,
    `node["leaf"]`. A parameter or variable is named for the node it holds (`generation.batch_size`)."""
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    }
    aliases = {}  # `ev = cfg.eval`, `ev, beta = cfg.eval, ...`, `ev = cfg.get("eval")` -> ev holds "eval"
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                both = (
                    zip(target.elts, node.value.elts)
                    if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                    else [(target, node.value)]
                )
                aliases |= {t.id: held for t, v in both if isinstance(t, ast.Name) and (held := _held_node(v))}

    def node_name(base: ast.AST) -> set[str]:
        if isinstance(base, ast.Attribute):
            return {base.attr}
        if isinstance(base, ast.Name):
            return {base.id, aliases.get(base.id, base.id)}
        if isinstance(base, ast.Subscript) and isinstance(base.slice, ast.Constant):
            return {str(base.slice.value)}
        return set()

    pairs = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Attribute):
            pairs |= {f"{parent}.{n.attr}" for parent in node_name(n.value)}
        elif isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant) and isinstance(n.slice.value, str):
            pairs |= {f"{parent}.{n.slice.value}" for parent in node_name(n.value)}
        elif (
            isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute)
            and n.func.attr == "get"
            and n.args
            and isinstance(n.args[0], ast.Constant)
            and isinstance(n.args[0].value, str)
        ):
            pairs |= {f"{parent}.{n.args[0].value}" for parent in node_name(n.func.value)}
    return names, pairs


@cache
def reads_of_the_package() -> tuple[frozenset[str], frozenset[str]]:
    """`_reads` over pilaf_exp/, config_checks.py left out: validating a key is not using it."""
    names, pairs = set(), set()
    for file in PACKAGE.rglob("*.py"):
        if file.name != "config_checks.py":
            found = _reads(ast.parse(file.read_text(), str(file)))
            names |= found[0]
            pairs |= found[1]
    return frozenset(names), frozenset(pairs)


@cache
def interpolated_keys() -> frozenset[str]:
    """Keys some yaml under conf/ reads by interpolation (`trainer.precision: ${model.precision}`)."""
    conf = PACKAGE.parent / "conf"
    return frozenset(m for f in conf.rglob("*.yaml") for m in re.findall(r"\$\{([\w.]+)}", f.read_text()))


def use_of(cfg: dict[str, Any], path: tuple[str, ...]) -> str | None:
    """How the leaf at `path` is used ("instantiate", "parameter", "interpolated", "read", "allowed"), None if
    not at all."""
    if path[-1] in INSTANTIATE_KEYS:
        return "instantiate"
    node: Any = cfg
    for depth, part in enumerate(path):  # a parameter of the nearest _target_ above it (a whole node can be one)
        if isinstance(node, dict) and isinstance(node.get("_target_"), str) and part in parameters(node["_target_"]):
            return "parameter"
        node = node[part] if depth < len(path) - 1 else None
    if ".".join(path) in interpolated_keys():
        return "interpolated"
    names, pairs = reads_of_the_package()
    # A nested key is read when its own node is: `eval.lr` is not read by a read of `algo.lr`.
    if (len(path) == 1 and path[0] in names) or ".".join(path[-2:]) in pairs:
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
    # A name read under another node does not count: `algo.lr` is read, an `eval.lr` would not be.
    assert use_of(cfg, ("algo", "lr")) == "parameter"
    assert "lr" in reads_of_the_package()[0] and "eval.lr" not in reads_of_the_package()[1]
    assert use_of(cfg | {"eval": {**cfg["eval"], "lr": 1.0}}, ("eval", "lr")) is None
    assert use_of(cfg, ("eval", "exact_every")) == "read"  # through `ev = cfg.eval` (build.py)
    assert use_of(cfg, ("model", "precision")) == "interpolated"
    assert use_of(cfg, ("trainer", "accelerator")) == "parameter"
    assert use_of(cfg, ("trainer", "_partial_")) == "instantiate"
