"""Batched, KV-cached decoding from a per-row mixture of two causal LMs.

Every row of a decode batch draws its next token from
    logits = w_policy * h_policy + w_ref * h_ref          (then / temperature)
with the weights fixed by the row's *source*:
    policy    (1, 0)           y ~ pi_theta
    reference (0, 1)           y ~ pi_ref
    plus      (1 + c, -c)      PILAF's pi_plus  (token-level interpolation, c = coef)
    minus     (1 - c, +c)      PILAF's pi_minus
Each model runs on just the rows whose weight for it is non-zero, with a KV cache, so the
reference is never run on pure-policy rows and neither model ever re-reads a prefix.

How each decode step runs the models is the engine's job (`DecodeSpec.engine`, `engines.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pilaf_exp.data.task import ResponseFormat
from pilaf_exp.sampling.engines import GenerationMemoryError, make_runners, mixed_logits
from pilaf_exp.sampling.sharding import Lockstep

SOURCES: tuple[str, ...] = ("policy", "reference", "plus", "minus")
POLICY, REFERENCE, PLUS, MINUS = range(len(SOURCES))


@dataclass(frozen=True)
class DecodeSpec:
    """How responses are decoded: shared by training-time sampling and evaluation. Build it from a
    task's response format with `DecodeSpec.of`."""

    max_new_tokens: int
    temperature: float = 1.0
    eos_token_id: int | None = None
    pad_token_id: int = 0
    max_rows: int | None = None  # rows decoded at once (model.generation.batch_size); None = all
    max_kv_cache_gb: float | None = None  # refuse a chunk whose estimated KV cache exceeds this
    engine: str = "auto"  # auto | stacked | separate | transformers (module docstring)

    @classmethod
    def of(cls, response: ResponseFormat, temperature: float, **settings: Any) -> DecodeSpec:
        """The task's response format at `temperature`; `settings`: max_rows, max_kv_cache_gb, engine."""
        return cls(response.max_new_tokens, temperature, response.eos_token_id, response.pad_token_id, **settings)


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


def sample_from(logp: Tensor, generator: torch.Generator) -> Tensor:
    """One token per row from log-probs [R, V] by inverse-CDF sampling: one uniform per row, a
    float64 cumulative sum, and the first token whose CDF exceeds it (a zero-probability token
    never is). ~8x cheaper than torch.multinomial on small batches, same distribution."""
    cdf = logp.double().exp().cumsum(-1)  # [R, V]
    u = torch.rand(len(logp), 1, generator=generator, device=logp.device, dtype=torch.float64) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=logp.shape[-1] - 1)


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
    # Inference mode skips autograd's per-operator bookkeeping; the outputs are copied out of it
    # because training later reads them (tokens as embedding indices are saved for backward).
    with torch.inference_mode():
        out = _decode(policy, reference, prompt_ids, prompt_mask, sources, spec, generator, coef)
    return Decoded(
        tokens=out.tokens.clone(),
        mask=out.mask.clone(),
        logprobs=out.logprobs.clone(),
        positions=out.positions,
        prompt_width=out.prompt_width,
    )


def _decode(policy, reference, prompt_ids, prompt_mask, sources, spec, generator, coef) -> Decoded:
    check_same_vocabulary(policy, reference)
    prompt_ids, prompt_mask = drop_padding_columns(prompt_ids, prompt_mask)
    sync = Lockstep.of(policy, reference)
    step = spec.max_rows or len(prompt_ids)
    if step >= len(prompt_ids) and sync is None:
        return _decode_chunk(policy, reference, prompt_ids, prompt_mask, sources, spec, generator, coef)
    starts = range(0, len(prompt_ids), max(step, 1))
    # Sharded: as many chunks as the rank with the most rows, agreed before any (extra ones discarded).
    idle = sync.max([len(starts)])[0] - len(starts) if sync else 0
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
            sync,
        )
        for i in starts
    ]
    for _ in range(idle):
        _idle_chunk(policy, reference, spec, coef, sync, prompt_ids.device)
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


def _decode_chunk(
    policy, reference, prompt_ids, prompt_mask, sources, spec, generator, coef, sync=None, idle=False
) -> Decoded | None:
    """One chunk of rows. With `sync` (sharded models), every rank runs every model any rank needs
    and as many steps as the longest-running rank; a rank whose rows are done (or that has none:
    `sources` empty, a stand-in chunk) runs its forwards without sampling or keeping anything, so
    its own results and generator are as if it had stopped. `idle`: a stand-in chunk (one
    policy row) run only for its forwards."""
    device = prompt_ids.device
    weights = mixture_weights(sources, coef)  # [R, 2]
    positions = prompt_ids.shape[1] + spec.max_new_tokens
    need = [(model, int((weights[:, k] != 0).sum())) for k, model in enumerate((policy, reference))]
    check_kv_budget([(model, rows) for model, rows in need if rows], positions, spec)
    keep = tuple(bool(n) for n in sync.max([rows for _, rows in need])) if sync else None
    runners = make_runners(policy, reference, weights, positions, spec.engine, keep)
    rows, width = prompt_ids.shape
    # Columns of the attention mask for every position decoded, allocated once: [R, P + T].
    full_attention = F.pad(prompt_mask.long(), (0, spec.max_new_tokens), value=1)
    attention = full_attention[:, :width]
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    step_ids = prompt_ids
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    tokens, masks, logprobs = [], [], []
    done = idle
    for _ in range(spec.max_new_tokens):
        logits = mixed_logits(runners, step_ids, attention, position_ids)
        if not done:
            token, logprob = _next_token(logits, spec, generator, finished, masks)
            tokens.append(token)
            logprobs.append(logprob)
            step_ids = token[:, None]
            done = spec.eos_token_id is not None and bool(finished.all())
        if not (sync.any(not done) if sync else not done):
            break
        width += 1
        attention = full_attention[:, :width]
        position_ids = position_ids[:, -1:] + 1
    if idle:
        return None
    tokens = torch.stack(tokens, dim=1)
    masks = torch.stack(masks, dim=1) if masks else torch.ones_like(tokens)
    return Decoded(
        tokens=tokens,
        mask=masks,
        logprobs=torch.stack(logprobs, dim=1),
        positions={name: sum(r.positions.get(name, 0) for r in runners) for name in ("policy", "reference")},
        prompt_width=prompt_ids.shape[1],
    )


def _idle_chunk(policy, reference, spec: DecodeSpec, coef: float, sync: Lockstep, device: torch.device) -> None:
    """A stand-in chunk (one padding token) run only for its forwards, matching another rank's chunk."""
    ids, mask = torch.full((1, 1), spec.pad_token_id, device=device), torch.ones(1, 1, device=device)
    source = torch.full((1,), POLICY, device=device)
    _decode_chunk(policy, reference, ids, mask, source, spec, None, coef, sync, idle=True)


def _next_token(logits: Tensor, spec: DecodeSpec, generator, finished: Tensor, masks: list) -> tuple[Tensor, Tensor]:
    """[R] sampled tokens (pad after EOS) and their log-probs; marks the rows that emit EOS in
    `finished` and appends this step's [R] mask of live rows to `masks`."""
    if spec.temperature != 1.0:
        logits = logits / spec.temperature
    logp = torch.log_softmax(logits, dim=-1)  # [R, V]
    token = sample_from(logp, generator)
    logprob = logp.gather(-1, token[:, None]).squeeze(-1)
    if spec.eos_token_id is not None:
        alive = ~finished
        token = torch.where(alive, token, spec.pad_token_id)
        masks.append(alive.long())
        logprob = logprob * alive
        finished |= token == spec.eos_token_id
    return token, logprob
