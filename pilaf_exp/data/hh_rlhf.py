"""HH-RLHF (Bai et al. 2022): the paper's prompts, from the hub or from local JSONL files.

Each row's `chosen` dialogue is split at its last assistant turn: everything up to and including
"\\n\\nAssistant:" is the prompt, the rest is the chosen response (the SFT target). Prompts or
SFT responses over the token limits are skipped, never truncated; the counts are logged and go
into the run's summary (`task/skipped_*`).
"""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import datasets
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from pilaf_exp.data.prompts import Prompts
from pilaf_exp.data.task import ResponseFormat
from pilaf_exp.data.text import Messages, encode_batch, pad_left, pad_right
from pilaf_exp.infra.errors import ConfigError

log = logging.getLogger(__name__)

HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"


def split_dialogue(text: str) -> tuple[str, str] | None:
    """'...\\n\\nAssistant: reply' -> ('...\\n\\nAssistant:', ' reply'); None without an assistant turn."""
    cut = text.rfind(ASSISTANT)
    if cut < 0:
        return None
    cut += len(ASSISTANT)
    return text[:cut], text[cut:]


def to_messages(prompt: str, response: str) -> Messages:
    """HH's "\\n\\nHuman: ... \\n\\nAssistant: ..." prompt and a reply -> chat messages."""
    messages: Messages = []
    for human_turn in prompt.split(HUMAN)[1:]:
        for role, content in zip(("user", "assistant"), human_turn.split(ASSISTANT)):
            if content.strip() or role == "user":
                messages.append({"role": role, "content": content.strip()})
    return messages + [{"role": "assistant", "content": response.strip()}]


def check_jsonl(path: str, key: str) -> None:
    """Every line is a JSON object with a `chosen` string; else one line naming file and line."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{key}={path!r} does not exist")
    opener = gzip.open if file.suffix == ".gz" else open  # HH-RLHF ships as train.jsonl.gz
    with opener(file, "rt") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ConfigError(f"{path} line {number}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("chosen"), str):
                raise ConfigError(f"{path} line {number}: expected an object with a string 'chosen' (HH-RLHF schema)")


def load_split(source: str, data_files: dict | None, split: str) -> list[str]:
    """The `chosen` texts of one split: from local JSONL (`data_files[split]`) or `source`."""
    files = (data_files or {}).get(split)
    try:
        if files:
            for path in [files] if isinstance(files, str) else files:
                check_jsonl(path, f"task.data_files.{split}")
            rows = datasets.load_dataset("json", data_files={split: files}, split=split)
        else:
            rows = datasets.load_dataset(source, split=split)
    except ConfigError:
        raise
    except Exception as error:  # the hub, a missing split, a bad local directory: one line, not a traceback
        raise ConfigError(f"task.source={source!r} split {split!r} could not be loaded: {error}") from None
    return list(rows["chosen"])


class HHRLHFTask:
    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        source: str = "Anthropic/hh-rlhf",
        data_files: dict | None = None,
        max_prompt_length: int = 256,
        max_response_length: int = 128,
        num_train_prompts: int | None = None,
        num_test_prompts: int | None = 512,
    ) -> None:
        if tokenizer is None:
            raise ConfigError("task=hh_rlhf needs a model with a tokenizer: model=small or model=llama3_8b")
        self.tokenizer = tokenizer
        self.max_prompt_length, self.max_response_length = max_prompt_length, max_response_length
        self.skipped: dict[str, int] = {}
        train_prompts, train_responses = self.tokenize(load_split(source, data_files, "train"), "train")
        test_prompts, _ = self.tokenize(load_split(source, data_files, "test"), "test")
        train_prompts, test_prompts = train_prompts[:num_train_prompts], test_prompts[:num_test_prompts]
        if not train_prompts or not test_prompts:
            raise ConfigError(f"task.source={source!r}: no usable prompts left (skipped: {self.skipped})")
        # SFT keeps only the responses that fit; a longer one would be cut, changing the target.
        fits = [i for i, r in enumerate(train_responses[: len(train_prompts)]) if len(r) <= max_response_length]
        self.count_skip(
            "train_sft_response_too_long", len(train_prompts) - len(fits), f"over {max_response_length} tokens"
        )
        pad = tokenizer.pad_token_id
        self.train = Prompts(*pad_left(train_prompts, pad))
        self.test = Prompts(*pad_left(test_prompts, pad))
        self.sft_prompts = self.train[torch.tensor(fits, dtype=torch.long)]
        self.sft_responses = pad_right([train_responses[i] for i in fits], pad, max_response_length)
        log.info("hh_rlhf: %d train / %d test prompts; skipped %s", len(self.train), len(self.test), self.skipped)

    def count_skip(self, reason: str, count: int, detail: str = "") -> None:
        if count:
            self.skipped[reason] = self.skipped.get(reason, 0) + count
            log.warning("hh_rlhf: skipped %d rows: %s %s", count, reason, detail)

    def tokenize(self, texts: list[str], split: str) -> tuple[list[list[int]], list[list[int]]]:
        """Prompt ids (with the tokenizer's special tokens) and response ids (+ EOS) of the rows kept."""
        parts = [split_dialogue(t) for t in texts]
        self.count_skip(f"{split}_no_assistant_turn", sum(p is None for p in parts))
        parts = [p for p in parts if p is not None and p[1].strip()]
        prompts = encode_batch(self.tokenizer, [p for p, _ in parts], special=True)
        eos = [self.tokenizer.eos_token_id]
        responses = [r + eos for r in encode_batch(self.tokenizer, [r for _, r in parts], special=False)]
        keep = [i for i, p in enumerate(prompts) if len(p) <= self.max_prompt_length]
        self.count_skip(f"{split}_prompt_too_long", len(prompts) - len(keep), f"over {self.max_prompt_length} tokens")
        return [prompts[i] for i in keep], [responses[i] for i in keep]

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def response_format(self) -> ResponseFormat:
        return ResponseFormat(self.max_response_length, self.eos_token_id, self.pad_token_id)

    def sft_examples(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """`count` chosen (prompt, response) pairs drawn with replacement from the train split."""
        index = torch.randint(len(self.sft_prompts), (count,), generator=generator)
        prompts = self.sft_prompts[index]
        return prompts.ids, prompts.mask, self.sft_responses[0][index], self.sft_responses[1][index]

    to_messages = staticmethod(to_messages)
