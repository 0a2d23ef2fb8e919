"""What the oracle reads: the policy's tokens as they are, or re-encoded through text when the
oracle has its own tokenizer or chat template."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor
from transformers import PreTrainedTokenizerBase

from pilaf_exp.data.text import Messages, join, strip_padding


def same_tokenizer(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """Token ids mean the same thing in both, and `b` imposes no chat format of its own."""
    return a.get_vocab() == b.get_vocab() and not getattr(b, "chat_template", None)


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
        encoded = tok(
            texts,
            add_special_tokens=not getattr(tok, "chat_template", None),
            padding=True,
            padding_side="right",
            return_tensors="pt",
        )
        if encoded.input_ids.shape[1] > self.max_length:
            raise ValueError(
                f"an oracle input is {encoded.input_ids.shape[1]} tokens, over oracle.max_length={self.max_length}: "
                "raise it or lower the prompt/response limits (inputs are never truncated)"
            )
        device = prompt_ids.device
        mask = encoded.attention_mask.to(device)
        return encoded.input_ids.to(device), mask, (mask.cumsum(-1) - 1).clamp(min=0)
