"""A task's language decides the model it needs, asked by capability (not by the task's class
name), and a token-id task's promise to its model (vocabulary, lengths) is checked in one line."""

from __future__ import annotations

from types import SimpleNamespace

from pilaf_exp.config_checks import problems
from pilaf_exp.data.embedded import EmbeddedTask
from pilaf_exp.data.hh_rlhf import HHRLHFTask
from pilaf_exp.data.task import TextTask, TokenTask, model_mismatch
from pilaf_exp.infra.cli import compose_config


class OtherTokenTask(EmbeddedTask):
    """A token-id task that is not the embedded one (the config names it by another class)."""


def test_the_language_is_a_capability_of_the_class():
    assert issubclass(HHRLHFTask, TextTask) and not issubclass(EmbeddedTask, TextTask)
    assert isinstance(EmbeddedTask(), TokenTask)


def test_a_new_token_id_task_is_not_told_it_is_text():
    cfg = compose_config("output_dir=/tmp/x", f"task._target_={__name__}.OtherTokenTask")
    assert problems(cfg) == []
    text_model = compose_config("output_dir=/tmp/x", f"task._target_={__name__}.OtherTokenTask", "model=small")
    # The message names the bad choice and the accepted one; `task=` is the group's choice, which the
    # override of its _target_ keeps.
    assert problems(text_model) == [
        "task=embedded works on token ids and needs a model without a tokenizer (model=tiny); model=small has one"
    ]


def test_a_model_that_breaks_the_promise_gets_one_line_naming_the_value_and_the_expected_one():
    vocab = compose_config("output_dir=/tmp/x", "model.policy.vocab_size=16")
    assert problems(vocab) == [
        "the policy has 16 token embeddings but the task's token ids are 0..7: "
        "expected model.policy.vocab_size=8 (task.vocab_size)"
    ]
    short = compose_config("output_dir=/tmp/x", "model.policy.max_positions=9")
    assert problems(short) == [
        "the policy has 9 positions but a prompt + response is 10 tokens: "
        "expected model.policy.max_positions >= 10 (task.prompt_length + task.response_length)"
    ]
    oracle = compose_config("output_dir=/tmp/x", "oracle.model.vocab_size=4")
    assert problems(oracle) == ["oracle.model.vocab_size=4 is not accepted: expected >= task.vocab_size=8"]


def test_model_mismatch_accepts_a_model_that_keeps_the_promise():
    task = SimpleNamespace(vocab_size=8, prompt_length=4, response_length=6)
    assert model_mismatch(task, 8, 10) is None
    assert model_mismatch(task, 8, 32) is None
    assert "vocab_size=8" in model_mismatch(task, 9, 32)
