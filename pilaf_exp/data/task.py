"""What a task is (`typing.Protocol`s), and the optional capabilities some tasks have.

Every task gives train/test prompt sets, its decoding rule and SFT data. The embedded task also
has the capabilities below; `isinstance(task, EnumerableTask)` asks for one by name.
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


class TextTask(Task, Protocol):
    def to_messages(self, prompt: str, response: str) -> Messages:
        """A prompt and a reply as chat messages (for an oracle with a chat template)."""
        ...


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
