"""Config validation before anything is built or written: one clear line per problem."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from pilaf_exp.data.task import TextTask, model_mismatch
from pilaf_exp.infra.errors import ConfigError
from pilaf_exp.models.loading import check_checkpoint
from pilaf_exp.sampling.engines import ENGINES as GENERATION_ENGINES
from pilaf_exp.sampling.engines import SHARDED_ENGINES

PRECISIONS = ("32-true", "32", "bf16-true", "bf16-mixed", "16-mixed", "16-true", "64-true")

Rule = tuple[str, Callable[[Any], bool], str]  # (dotted key, predicate, what is accepted)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(low: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _positive(v: Any) -> bool:
    return _number(v) and v > 0


def _fraction(v: Any) -> bool:
    return _number(v) and 0 <= v <= 1


DTYPES = ("float32", "bfloat16", "float16")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")

# The rules of each config group (conf/<group>/), one block per group, checked on the composed config
# before anything is built so every bad value is reported at once, one line each. Keys absent from
# the composed config are skipped, so a rule for one option's field (sampler.n) only applies when
# that option is chosen; tests/test_config_surface.py checks that every key exists in some option.
RULES: dict[str, list[Rule]] = {
    # conf/config.yaml: the run's own settings and the evaluation.
    "config": [
        ("seed", _int(0), "an integer >= 0"),
        (
            "threads",
            lambda v: v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
            "auto or an integer >= 1",
        ),
        ("resume", lambda v: v in ("auto", "never"), "auto or never"),
        ("checkpoint.every_n_steps", _int(1), "an integer > 0 or null"),
        ("checkpoint.keep", _int(1), "an integer >= 1"),
        ("min_free_disk_gb", lambda v: _number(v) and v >= 0, "a number >= 0"),
        ("eval.temperature", _positive, "a number > 0"),
        ("eval.batch_size", _int(1), "an integer > 0"),
        ("eval.seed", _int(0), "an integer >= 0"),
        ("eval.samples_per_prompt", _int(1), "an integer >= 1"),
        ("eval.exact_prompts", _int(0), "an integer >= 0"),
        ("eval.exact_every", _int(1), "an integer > 0 or null"),
    ],
    # conf/task/embedded.yaml, conf/task/hh_rlhf.yaml
    "task": [
        ("task.vocab_size", _int(2), "an integer >= 2"),
        ("task.prompt_length", _int(1), "an integer > 0"),
        ("task.response_length", _int(1), "an integer > 0"),
        ("task.concentration", _positive, "a number > 0"),
        ("task.seed", _int(0), "an integer >= 0"),
        ("task.num_train_prompts", _int(1), "an integer > 0 or null"),
        ("task.num_test_prompts", _int(1), "an integer > 0"),
        ("task.max_prompt_length", _int(1), "an integer > 0"),
        ("task.max_response_length", _int(1), "an integer > 0"),
    ],
    # conf/model/tiny.yaml, small.yaml, llama3_8b.yaml: the policy, its decoding and its SFT stage.
    "model": [
        ("model.policy.hidden_size", _int(1), "an integer > 0"),
        ("model.policy.num_layers", _int(1), "an integer > 0"),
        ("model.policy.num_heads", _int(1), "an integer > 0"),
        ("model.policy.max_positions", _int(1), "an integer > 0"),
        ("model.policy.dtype", lambda v: v in DTYPES, "float32, bfloat16 or float16"),
        ("model.max_prompt_length", _int(1), "an integer > 0"),
        ("model.max_response_length", _int(1), "an integer > 0"),
        ("model.generation.batch_size", _int(1), "an integer > 0"),
        ("model.generation.max_kv_cache_gb", _positive, "a number > 0 or null"),
        ("model.generation.engine", lambda v: v in GENERATION_ENGINES, ", ".join(GENERATION_ENGINES)),
        ("model.sft.steps", _int(0), "an integer >= 0 (0: no SFT)"),
        ("model.sft.demonstrations", _int(1), "an integer > 0 or null"),
        ("model.sft.batch_size", _int(1), "an integer > 0"),
        ("model.sft.lr", _positive, "a number > 0"),
        ("model.sft.seed", _int(0), "an integer >= 0"),
    ],
    # conf/oracle/embedded.yaml, skywork_8b.yaml (conf/oracle/labeler/*.yaml have no values)
    "oracle": [
        ("oracle.model.hidden_size", _int(1), "an integer > 0"),
        ("oracle.model.num_layers", _int(1), "an integer > 0"),
        ("oracle.model.dtype", lambda v: v in DTYPES, "float32, bfloat16 or float16"),
        ("oracle.max_length", _int(1), "an integer > 0"),
        ("oracle.target_std", _positive, "a number > 0"),
        ("oracle.calibration_prompts", _int(2), "an integer >= 2 or null"),
    ],
    # conf/sampler/best_of_n.yaml, pilaf.yaml (vanilla and hybrid have no values)
    "sampler": [
        ("sampler.n", _int(2), "an integer >= 2"),
        ("sampler.beta", _positive, "a number > 0"),
        ("sampler.coef", _fraction, "a number in [0, 1]"),
        ("sampler.interpolated_fraction", _fraction, "a number in [0, 1]"),
    ],
    # conf/algo/online.yaml, iterative.yaml: DPO and its optimisation (batch sizes, learning rate).
    "algo": [
        ("algo.beta", _positive, "a number > 0"),
        ("algo.batch_size", _int(1), "an integer > 0"),
        ("algo.micro_batch_size", _int(1), "an integer > 0 or null"),
        ("algo.lr", _positive, "a number > 0"),
        ("algo.weight_decay", lambda v: _number(v) and v >= 0, "a number >= 0"),
        ("algo.temperature", _positive, "a number > 0"),
        ("algo.eval_every", _int(1), "an integer > 0"),
        ("algo.steps", _int(1), "an integer > 0"),
        ("algo.iterations", _int(1), "an integer > 0"),
        ("algo.prompts_per_iteration", _int(1), "an integer > 0"),
        ("algo.sample_batch_size", _int(1), "an integer > 0"),
    ],
    # conf/trainer/_base.yaml and the options built on it (cpu, gpu, ddp, ddp_cpu, fsdp)
    "trainer": [
        ("trainer.accelerator", lambda v: v in ACCELERATORS, "cpu, gpu, cuda, mps or auto"),
        ("trainer.precision", lambda v: v in PRECISIONS, ", ".join(PRECISIONS)),
        ("trainer.log_every_n_steps", _int(1), "an integer > 0"),
    ],
}


def _task_reads_text(cfg: DictConfig) -> bool | None:
    """Whether the configured task's class is a `TextTask` (asked by capability, not by name);
    None when there is no task class to ask."""
    target = OmegaConf.select(cfg, "task._target_")
    try:
        return issubclass(get_class(target), TextTask) if isinstance(target, str) else None
    except (ImportError, ValueError, AttributeError):
        return None  # an unknown class: hydra's instantiate names it


def _token_task_problems(cfg: DictConfig) -> list[str]:
    """The model a token-id task's config builds keeps the task's promise (`data.task.TokenTask`)."""
    promise = {key: OmegaConf.select(cfg, f"task.{key}") for key in ("vocab_size", "prompt_length", "response_length")}
    model = [OmegaConf.select(cfg, f"model.policy.{key}") for key in ("vocab_size", "max_positions")]
    if not all(isinstance(v, int) for v in (*promise.values(), *model)):
        return []  # a pretrained policy: checked once it is built (build.fresh_world)
    found = [mismatch] if (mismatch := model_mismatch(SimpleNamespace(**promise), *model)) else []
    oracle, vocab = OmegaConf.select(cfg, "oracle.model.vocab_size"), promise["vocab_size"]
    if isinstance(oracle, int) and oracle < vocab:  # the oracle reads every id the policy writes
        found.append(f"oracle.model.vocab_size={oracle} is not accepted: expected >= task.vocab_size={vocab}")
    return found


def _sharded(cfg: DictConfig) -> bool:
    """trainer.strategy shards the models: FSDP, ours (trainer=fsdp, fsdp_cpu) or Lightning's by name."""
    strategy = OmegaConf.select(cfg, "trainer.strategy", default=None)
    if isinstance(strategy, DictConfig):
        return str(strategy.get("_target_", "")).endswith(".fsdp_strategy")
    return strategy == "fsdp"


def _choice(cfg: DictConfig, group: str) -> str:
    """The option the command line picked in `group` (Hydra's choice; '?' where the config was composed without it)."""
    try:
        return str(OmegaConf.select(cfg, f"choices.{group}", default="?"))
    except Exception:  # ${hydra:...} does not resolve outside a Hydra app (tests compose the config)
        return "?"


def _combination_problems(cfg: DictConfig) -> list[str]:
    """Choices that are each fine but do not go together."""
    found = []
    text = _task_reads_text(cfg)
    has_tokenizer = OmegaConf.select(cfg, "model.tokenizer") is not None
    if text is False and has_tokenizer:
        task, model = _choice(cfg, "task"), _choice(cfg, "model")
        found.append(
            f"task={task} works on token ids and needs a model without a tokenizer (model=tiny); model={model} has one"
        )
    if text and not has_tokenizer:
        task, model = _choice(cfg, "task"), _choice(cfg, "model")
        found.append(
            f"task={task} reads text and needs a model with a tokenizer (model=small, model=llama3_8b); "
            f"model={model} has none"
        )
    batch, micro = OmegaConf.select(cfg, "algo.batch_size"), OmegaConf.select(cfg, "algo.micro_batch_size")
    if isinstance(batch, int) and isinstance(micro, int) and micro > 0 and batch % micro:
        found.append(f"algo.micro_batch_size={micro} must divide algo.batch_size={batch}")
    hidden, heads = OmegaConf.select(cfg, "model.policy.hidden_size"), OmegaConf.select(cfg, "model.policy.num_heads")
    if isinstance(hidden, int) and isinstance(heads, int) and heads > 0 and hidden % heads:
        found.append(f"model.policy.hidden_size={hidden} must be a multiple of model.policy.num_heads={heads}")
    if text is False:
        found += _token_task_problems(cfg)
    engine = OmegaConf.select(cfg, "model.generation.engine")
    if _sharded(cfg) and engine in ("stacked", "separate"):
        found.append(f"model.generation.engine={engine!r} {SHARDED_ENGINES}")
    return found


PATHS = ("model.policy.path", "oracle.model.path")
DATA_FILES = ("task.data_files.train", "task.data_files.test")


def _path_problems(cfg: DictConfig) -> list[str]:
    """Checkpoint directories and data files named in the config exist (hub ids are not checked)."""
    found = []
    for key in PATHS:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, str):
            try:
                check_checkpoint(value, key)
            except ConfigError as error:
                found.append(str(error))
    for key in DATA_FILES:
        value = OmegaConf.select(cfg, key)
        for path in [value] if isinstance(value, str) else list(value or []):
            if not Path(path).expanduser().is_file():
                found.append(f"{key}={path!r} does not exist")
    return found


def problems(cfg: DictConfig) -> list[str]:
    found = _combination_problems(cfg)
    if found:  # values of a mismatched combination may not even resolve
        return found
    found = _path_problems(cfg)
    for key, accepted, expected in (rule for rules in RULES.values() for rule in rules):
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not accepted(value):
            found.append(f"{key}={value!r} is not accepted: expected {expected}")
    return found


def validate(cfg: DictConfig) -> None:
    found = problems(cfg)
    if found:
        raise ConfigError("\n".join(found))  # one line per problem
