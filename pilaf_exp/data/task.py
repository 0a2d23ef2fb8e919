"""What a task is (`typing.Protocol`s), and the optional capabilities some tasks have.

Every task gives train/test prompt sets, its decoding rule and SFT data. Its language is either
text (`TextTask`: the model's tokenizer reads it) or token ids (`TokenTask`: the task fixes the
model's vocabulary and lengths). The embedded task also has the capabilities below;
`isinstance(task, EnumerableTask)` asks for one by name, `issubclass(cls, TextTask)` asks a class
named by a config before it is built (config_checks.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from pilaf_exp.data.prompts import Prompts
from pilaf_exp.data.text import Messages


@dataclass(frozen=True)
class ResponseFormat:
    """How a task's responses end: after `max_new_tokens`, or at EOS where the task has one
    (padding after it)."""

    max_new_tokens: int
    eos_token_id: int | None = None
    pad_token_id: int = 0


class Task(Protocol):
    train: Prompts  # prompts the policy trains on
    test: Prompts  # held-out prompts it is evaluated on
    tokenizer: PreTrainedTokenizerBase | None  # None: token ids are the language
    skipped: dict[str, int]  # rows left out, by reason (summary.json: task/skipped_*)
    response_format: ResponseFormat

    def sft_examples(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Prompt ids, prompt mask [count, P], response ids, response mask [count, T]."""
        ...


@runtime_checkable
class TextTask(Protocol):
    """Its language is text: it is built with the model's tokenizer, and shows an oracle with its
    own tokenizer chat messages. Methods only, so a class can be asked (`issubclass`)."""

    def to_messages(self, prompt: str, response: str) -> Messages:
        """A prompt and a reply as chat messages (for an oracle with a chat template)."""
        ...


@runtime_checkable
class TokenTask(Protocol):
    """Its language is token ids (no tokenizer). What it promises the model it is trained on: ids
    below `vocab_size`, prompts of `prompt_length` and responses of `response_length` tokens. Its
    model must have exactly `vocab_size` embeddings and room for a prompt and a response
    (conf/model/tiny.yaml reads `${task.vocab_size}`); `model_mismatch` says where it does not."""

    vocab_size: int
    prompt_length: int
    response_length: int


def model_mismatch(task: TokenTask, vocab_size: int, positions: int) -> str | None:
    """One line naming what the model (`vocab_size` embeddings, `positions` positions) does not
    keep of `task`'s promise, None when it keeps all of it."""
    if vocab_size != task.vocab_size:
        return (
            f"the policy has {vocab_size} token embeddings but the task's token ids are 0..{task.vocab_size - 1}: "
            f"expected model.policy.vocab_size={task.vocab_size} (task.vocab_size)"
        )
    length = task.prompt_length + task.response_length
    if positions < length:
        return (
            f"the policy has {positions} positions but a prompt + response is {length} tokens: "
            f"expected model.policy.max_positions >= {length} (task.prompt_length + task.response_length)"
        )
    return None


@runtime_checkable
class EnumerableTask(Protocol):
    """Every response can be listed: vocab_size ** response_length of them, fixed length, no EOS."""

    vocab_size: int
    response_length: int
    test: Prompts


@runtime_checkable
class DemonstratingTask(Protocol):
    """Writes demonstrations for any prompt (the SFT data), so a policy's fit to them can be measured."""

    prompt_length: int
    test: Prompts
    response_format: ResponseFormat

    def demonstrations(self, count: int, generator: torch.Generator, prompts: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class KnowsItsDistribution(Protocol):
    """Knows the distribution its demonstrations come from."""

    def true_logprob(self, sequences: Tensor) -> Tensor: ...
