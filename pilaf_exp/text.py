"""Tokenizers, and moving responses between a policy's tokens and a reward model's tokens."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from pilaf_exp.checks import ConfigError, check_checkpoint
from pilaf_exp.dpo import join

Messages = list[dict[str, str]]


def load_pretrained(loader: Callable, path: str, what: str, **kwargs):
    """`loader.from_pretrained(path)` with a one-line error instead of a hub traceback."""
    check_checkpoint(path, what)
    try:
        return loader.from_pretrained(path, **kwargs)
    except OSError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{what}={path!r} could not be loaded ({first}); offline, give a local directory") from None


def load_tokenizer(path: str, what: str = "model.tokenizer.path") -> PreTrainedTokenizerBase:
    """A tokenizer that left-pads (prompts end where generation starts) and has a pad token."""
    tokenizer = load_pretrained(AutoTokenizer, path, what)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ConfigError(f"{what}={path!r}: the tokenizer has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def same_tokenizer(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """Token ids mean the same thing in both, and `b` imposes no chat format of its own."""
    return a.get_vocab() == b.get_vocab() and not getattr(b, "chat_template", None)


def strip_padding(ids: Tensor, mask: Tensor) -> list[list[int]]:
    """Each row's tokens where its mask is 1 (two tensor-to-list conversions, no per-row tensor ops)."""
    return [[t for t, m in zip(row, keep) if m] for row, keep in zip(ids.tolist(), mask.tolist())]


class TokenPassthrough:
    """Oracle and policy share a vocabulary: the policy's tokens go to the oracle as they are."""

    def __call__(self, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor):
        return join(prompt_ids, prompt_mask, response_ids, response_mask)


class TextReencoder:
    """Policy tokens -> text -> the oracle's own format and tokens (its chat template if it has one).

    `to_messages(prompt_text, response_text)` turns the task's text into chat messages.
    Returns right-padded (input_ids, attention_mask, position_ids) for the oracle: [B, L].
    """

    def __init__(
        self,
        policy_tokenizer: PreTrainedTokenizerBase,
        oracle_tokenizer: PreTrainedTokenizerBase,
        to_messages: Callable[[str, str], Messages],
        max_length: int,
    ) -> None:
        self.policy_tokenizer, self.oracle_tokenizer = policy_tokenizer, oracle_tokenizer
        self.to_messages, self.max_length = to_messages, max_length

    def texts(self, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor) -> list[str]:
        decode = self.policy_tokenizer.batch_decode
        prompts = decode(strip_padding(prompt_ids, prompt_mask), skip_special_tokens=True)
        responses = decode(strip_padding(response_ids, response_mask), skip_special_tokens=True)
        tok = self.oracle_tokenizer
        if getattr(tok, "chat_template", None):
            return [tok.apply_chat_template(self.to_messages(p, r), tokenize=False) for p, r in zip(prompts, responses)]
        return [p + r for p, r in zip(prompts, responses)]

    def __call__(self, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor):
        texts = self.texts(prompt_ids, prompt_mask, response_ids, response_mask)
        tok = self.oracle_tokenizer
        # A chat template writes its own special tokens (BOS); plain text gets the tokenizer's.
        encoded = tok(texts, add_special_tokens=not getattr(tok, "chat_template", None), padding=True,
                      padding_side="right", return_tensors="pt")  # fmt: skip
        if encoded.input_ids.shape[1] > self.max_length:
            raise ValueError(
                f"an oracle input is {encoded.input_ids.shape[1]} tokens, over oracle.max_length={self.max_length}: "
                "raise it or lower the prompt/response limits (inputs are never truncated)"
            )
        device = prompt_ids.device
        mask = encoded.attention_mask.to(device)
        return encoded.input_ids.to(device), mask, (mask.cumsum(-1) - 1).clamp(min=0)


def encode_batch(tokenizer: PreTrainedTokenizerBase, texts: list[str], special: bool) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=special)["input_ids"]


def pad_left(rows: list[list[int]], pad: int) -> tuple[Tensor, Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
    return ids, mask


def pad_right(rows: list[list[int]], pad: int, width: int | None = None) -> tuple[Tensor, Tensor]:
    width = width or max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask
