"""Batched, KV-cached decoding from a per-row mixture of two causal LMs.

Every row of a decode batch draws its next token from
    logits = w_policy * h_policy + w_ref * h_ref          (then / temperature)
with the weights fixed by the row's *source*:
    policy    (1, 0)           y ~ pi_theta
    reference (0, 1)           y ~ pi_ref
    plus      (1 + c, -c)      PILAF's pi_plus  (token-level interpolation, c = coef)
    minus     (1 - c, +c)      PILAF's pi_minus
Each model keeps its own KV cache over just the rows whose weight for it is non-zero, so
the reference is never run on pure-policy rows and neither model ever re-reads a prefix.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import DynamicCache

from pilaf_exp.checks import ConfigError

SOURCES: tuple[str, ...] = ("policy", "reference", "plus", "minus")
POLICY, REFERENCE, PLUS, MINUS = range(len(SOURCES))


@dataclass(frozen=True)
class DecodeSpec:
    """How responses are decoded: shared by training-time sampling and evaluation."""

    max_new_tokens: int
    temperature: float = 1.0
    eos_token_id: int | None = None
    pad_token_id: int = 0
    max_rows: int | None = None  # rows decoded at once (model.generation.batch_size); None = all
    max_kv_cache_gb: float | None = None  # refuse a chunk whose estimated KV cache exceeds this


class GenerationMemoryError(ConfigError):
    """A configured decode batch does not fit; the message names the setting to lower."""


@dataclass
class Decoded:
    tokens: Tensor  # [R, T] sampled response tokens, pad after EOS
    mask: Tensor  # [R, T] 1 on real response tokens (EOS included), 0 after it
    logprobs: Tensor  # [R, T] log-prob of each token under the distribution it was drawn from
    positions: dict[str, int]  # token positions each model processed (prefill + decode)
    prompt_width: int  # prompt columns actually decoded (after dropping all-padding columns)


def mixture_weights(sources: Tensor, coef: float) -> Tensor:
    """[R] source codes -> [R, 2] weights on (policy logits, reference logits)."""
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0 + coef, -coef], [1.0 - coef, coef]], device=sources.device)
    return table[sources]


def kv_cache_bytes_per_position(model: nn.Module) -> int:
    """Bytes of keys + values one token position occupies in `model`'s KV cache."""
    config = model.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    element = next(model.parameters()).element_size()
    return 2 * config.num_hidden_layers * kv_heads * head_dim * element


def check_kv_budget(models_rows: list[tuple[nn.Module, int]], positions: int, spec: DecodeSpec) -> None:
    """Fail before decoding when the chunk's estimated KV cache is over `spec.max_kv_cache_gb`."""
    if spec.max_kv_cache_gb is None:
        return
    need = sum(rows * positions * kv_cache_bytes_per_position(model) for model, rows in models_rows) / 1e9
    if need > spec.max_kv_cache_gb:
        rows = max(rows for _, rows in models_rows)
        raise GenerationMemoryError(
            f"decoding {rows} rows x {positions} positions needs an estimated {need:.2f} GB of KV cache, over "
            f"model.generation.max_kv_cache_gb={spec.max_kv_cache_gb}: lower model.generation.batch_size "
            f"(now {spec.max_rows}) or the prompt/response length limits"
        )


def cache_argument(model: nn.Module) -> str:
    """The forward() keyword for a KV cache: transformers 5.24 renamed `past_key_values` to `cache`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class _CachedRunner:
    """One model decoding a fixed subset of the batch rows with its own KV cache."""

    def __init__(self, model: nn.Module, rows: Tensor) -> None:
        self.model = model
        self.rows = rows  # [r] indices into the decode batch
        self.cache = DynamicCache()
        self.positions = 0
        self.cache_arg = cache_argument(model)

    def next_logits(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor:
        """Feed this step's tokens ([R, s]) for our rows; return next-token logits [r, V]."""
        ids = input_ids[self.rows]
        try:
            out = self.model(
                input_ids=ids,
                attention_mask=attention_mask[self.rows],
                position_ids=position_ids[self.rows],
                use_cache=True,
                logits_to_keep=1,
                **{self.cache_arg: self.cache},
            )
        except torch.OutOfMemoryError as error:
            raise GenerationMemoryError(
                f"out of device memory decoding {len(self.rows)} rows at width {attention_mask.shape[1]}: "
                "lower model.generation.batch_size or model.generation.max_kv_cache_gb"
            ) from error
        self.positions += ids.numel()
        return out.logits[:, -1].float()


def check_same_vocabulary(policy: nn.Module, reference: nn.Module) -> int:
    v_pol, v_ref = policy.config.vocab_size, reference.config.vocab_size
    if v_pol != v_ref:
        raise ValueError(
            f"policy vocabulary size {v_pol} != reference vocabulary size {v_ref}: "
            "logit interpolation needs one shared vocabulary"
        )
    return v_pol


def drop_padding_columns(prompt_ids: Tensor, prompt_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Remove leading columns that are padding in every row (a batch of short prompts drawn from
    a set padded to its longest prompt): [R, P] -> [R, P'] with the same outputs."""
    start = int(prompt_mask.any(0).long().argmax())
    return prompt_ids[:, start:], prompt_mask[:, start:]


@torch.no_grad()
def decode(
    policy: nn.Module,
    reference: nn.Module,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    sources: Tensor,
    spec: DecodeSpec,
    generator: torch.Generator,
    coef: float = 0.0,
) -> Decoded:
    """Sample one response per row. prompt_ids/prompt_mask: [R, P], left padded; sources: [R].
    Rows are decoded `spec.max_rows` at a time, in order, from the one generator."""
    check_same_vocabulary(policy, reference)
    prompt_ids, prompt_mask = drop_padding_columns(prompt_ids, prompt_mask)
    step = spec.max_rows or len(prompt_ids)
    if step >= len(prompt_ids):
        return _decode_chunk(policy, reference, prompt_ids, prompt_mask, sources, spec, generator, coef)
    parts = [
        _decode_chunk(
            policy,
            reference,
            prompt_ids[i : i + step],
            prompt_mask[i : i + step],
            sources[i : i + step],
            spec,
            generator,
            coef,
        )  # fmt: skip
        for i in range(0, len(prompt_ids), step)
    ]
    width = max(p.tokens.shape[1] for p in parts)  # chunks may stop at different steps (EOS)

    def cat(name: str, fill: int) -> Tensor:
        return torch.cat([F.pad(getattr(p, name), (0, width - p.tokens.shape[1]), value=fill) for p in parts])

    return Decoded(
        tokens=cat("tokens", spec.pad_token_id),
        mask=cat("mask", 0),
        logprobs=cat("logprobs", 0),
        positions={k: sum(p.positions[k] for p in parts) for k in parts[0].positions},
        prompt_width=prompt_ids.shape[1],
    )


def _decode_chunk(policy, reference, prompt_ids, prompt_mask, sources, spec, generator, coef) -> Decoded:
    vocab = policy.config.vocab_size
    device = prompt_ids.device
    weights = mixture_weights(sources, coef)  # [R, 2]
    runners = [
        _CachedRunner(model, torch.nonzero(weights[:, k] != 0).squeeze(-1))
        for k, model in enumerate((policy, reference))
    ]
    positions = prompt_ids.shape[1] + spec.max_new_tokens
    check_kv_budget([(r.model, len(r.rows)) for r in runners], positions, spec)
    rows = prompt_ids.shape[0]
    attention = prompt_mask.long()
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    step_ids = prompt_ids
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    tokens, masks, logprobs = [], [], []
    for _ in range(spec.max_new_tokens):
        logits = torch.zeros(rows, vocab, device=device)
        for k, runner in enumerate(runners):
            if runner.rows.numel():
                h = runner.next_logits(step_ids, attention, position_ids)
                logits[runner.rows] += weights[runner.rows, k, None] * h
        logp = torch.log_softmax(logits / spec.temperature, dim=-1)  # [R, V]
        token = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
        alive = ~finished
        token = torch.where(alive, token, spec.pad_token_id)
        tokens.append(token)
        masks.append(alive.long())
        logprobs.append(logp.gather(-1, token[:, None]).squeeze(-1) * alive)
        if spec.eos_token_id is not None:
            finished |= token == spec.eos_token_id
            if finished.all():
                break
        step_ids = token[:, None]
        attention = torch.cat([attention, torch.ones(rows, 1, dtype=torch.long, device=device)], dim=-1)
        position_ids = position_ids[:, -1:] + 1
    return Decoded(
        tokens=torch.stack(tokens, dim=1),
        mask=torch.stack(masks, dim=1),
        logprobs=torch.stack(logprobs, dim=1),
        positions={"policy": runners[0].positions, "reference": runners[1].positions},
        prompt_width=prompt_ids.shape[1],
    )
