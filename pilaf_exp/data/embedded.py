"""The embedded default task: a synthetic token language small enough to enumerate.

Prompts are every string of `prompt_length` content tokens (a seeded shuffle splits them
into train and test); demonstrations continue a prompt with a seeded random bigram chain,
which the SFT stage learns. Fixed-length responses, no special tokens: with 8 tokens and
responses of 6 a prompt has 8**6 = 262,144 possible responses, all enumerable.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import Tensor

from pilaf_exp.data.prompts import Prompts
from pilaf_exp.data.task import ResponseFormat


class EmbeddedTask:
    def __init__(
        self,
        vocab_size: int = 8,
        prompt_length: int = 4,
        response_length: int = 6,
        num_test_prompts: int = 256,
        concentration: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.vocab_size = vocab_size
        self.prompt_length = prompt_length
        self.response_length = response_length
        rng = np.random.default_rng(seed)
        # Row i: distribution of the token after token i. Dirichlet(concentration) rows give
        # a chain with structure to learn but enough entropy left for preferences to matter.
        self.transition = torch.tensor(
            rng.dirichlet([concentration] * vocab_size, size=vocab_size), dtype=torch.float32
        )
        prompts = torch.tensor(list(itertools.product(range(vocab_size), repeat=prompt_length)), dtype=torch.long)
        prompts = prompts[torch.from_numpy(rng.permutation(len(prompts)))]
        if not 0 < num_test_prompts < len(prompts):
            raise ValueError(f"task.num_test_prompts={num_test_prompts}: must be in 1..{len(prompts) - 1}")
        self.test = Prompts.unpadded(prompts[:num_test_prompts])
        self.train = Prompts.unpadded(prompts[num_test_prompts:])
        self.skipped: dict[str, int] = {}  # nothing is filtered out

    tokenizer = None  # token ids are the language: no text

    @property
    def response_format(self) -> ResponseFormat:
        return ResponseFormat(self.response_length)  # fixed length: no EOS, nothing to pad

    def demonstrations(self, count: int, generator: torch.Generator, prompts: Tensor | None = None) -> Tensor:
        """[count, P + T] prompts (default: the train split) continued by the bigram chain."""
        prompts = self.train.ids if prompts is None else prompts
        index = torch.randint(len(prompts), (count,), generator=generator)
        tokens = [prompts[index]]
        last = tokens[0][:, -1]
        for _ in range(self.response_length):
            last = torch.multinomial(self.transition[last], 1, generator=generator).squeeze(-1)
            tokens.append(last[:, None])
        return torch.cat(tokens, dim=1)

    def sft_examples(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """SFT data: prompt ids, prompt mask [count, P], response ids, response mask [count, T]."""
        demos = self.demonstrations(count, generator)
        prompts, responses = demos[:, : self.prompt_length], demos[:, self.prompt_length :]
        return prompts, torch.ones_like(prompts), responses, torch.ones_like(responses)

    def true_logprob(self, sequences: Tensor) -> Tensor:
        """log p(response | prompt) under the chain that wrote the demonstrations: [N]."""
        start = self.prompt_length - 1
        steps = self.transition[sequences[:, start:-1], sequences[:, start + 1 :]]
        return steps.log().sum(-1)
