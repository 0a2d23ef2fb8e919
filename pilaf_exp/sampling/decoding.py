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

Engines (`DecodeSpec.engine`): "stacked" runs both models as one ragged batch on the lean
decoder (`stacked_decoder.py`: shared elementwise operators and attention, one matmul per model),
"separate" runs each model alone on the lean decoder, "transformers" calls the models' own
forward with a `DynamicCache`, and "auto" picks stacked when the two share an architecture,
separate when not, and transformers for architectures the lean decoder does not cover.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import DynamicCache

from pilaf_exp.infra.errors import ConfigError
from pilaf_exp.sampling.stacked_decoder import StackedDecoder, architecture_key, unsupported_reason

# One operator sequence for both models, each model alone on the lean decoder, or the models' own forward.
ENGINES = ("auto", "stacked", "separate", "transformers")
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
    engine: str = "auto"  # auto | stacked | separate | transformers (module docstring)


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


class _Runner:
    """Feeds one decode step to its model(s) and adds weight x next-token logits into the mixture.
    `covers_all_rows_alone`: one model, every row, weight 1 (vanilla, best-of-N): its logits are the mixture."""

    covers_all_rows_alone: bool = False

    def step(self, input_ids: Tensor, attention: Tensor, positions: Tensor) -> Tensor:
        """Next-token logits [r, V] of this runner's rows, counting the positions."""
        raise NotImplementedError

    def add_logits(self, logits: Tensor | None, input_ids: Tensor, attention: Tensor, positions: Tensor) -> Tensor:
        raise NotImplementedError

    def logits(self, input_ids: Tensor, attention: Tensor, positions: Tensor) -> Tensor:
        return self.step(input_ids, attention, positions)


def _single_cover(rows: Tensor, scale: Tensor, total: int) -> bool:
    return (
        len(rows) == total
        and bool((scale == 1).all())
        and bool((rows == torch.arange(total, device=rows.device)).all())
    )


class _TransformersRunner(_Runner):
    """One model decoding a fixed subset of the batch rows through its own forward and a DynamicCache."""

    def __init__(self, model: nn.Module, rows: Tensor, scale: Tensor, name: str, total: int) -> None:
        self.model, self.rows, self.scale = model, rows, scale[:, None]  # rows: [r] indices into the batch
        self.cache = DynamicCache()
        self.positions = {name: 0}
        self.name = name
        self.cache_arg = cache_argument(model)
        self.covers_all_rows_alone = _single_cover(rows, scale, total)

    def step(self, input_ids: Tensor, attention: Tensor, positions: Tensor) -> Tensor:
        try:
            out = self.model(
                input_ids=input_ids[self.rows],
                attention_mask=attention[self.rows],
                position_ids=positions[self.rows],
                use_cache=True,
                logits_to_keep=1,
                **{self.cache_arg: self.cache},
            )
        except torch.OutOfMemoryError as error:
            raise out_of_memory(len(self.rows), attention.shape[1]) from error
        self.positions[self.name] += len(self.rows) * input_ids.shape[1]
        return out.logits[:, -1].float()  # [r, V]

    def add_logits(self, logits, input_ids, attention, positions):
        h = self.step(input_ids, attention, positions)
        if logits is None:
            logits = h.new_zeros(len(input_ids), h.shape[-1])
        logits[self.rows] += self.scale * h
        return logits


class _StackedRunner(_Runner):
    """One or more same-architecture models on the lean decoder, as one ragged batch of their rows."""

    def __init__(
        self, models: list[nn.Module], rows: list[Tensor], scales: list[Tensor], names: list[str], width: int,
        fuse: bool, stack: bool, total: int,
    ) -> None:  # fmt: skip
        self.decoder = StackedDecoder(models, rows, width, fuse=fuse, stack=stack)
        self.scale = torch.cat(scales)[:, None]  # [N, 1] weight of each (model, row) in its row's mixture
        self.sizes = dict(zip(names, (len(r) for r in rows)))
        self.positions = dict.fromkeys(names, 0)
        self.covers_all_rows_alone = len(models) == 1 and _single_cover(rows[0], scales[0], total)

    def step(self, input_ids: Tensor, attention: Tensor, positions: Tensor) -> Tensor:
        try:
            h = self.decoder.next_logits(input_ids, attention, positions)  # [N, V]
        except torch.OutOfMemoryError as error:
            raise out_of_memory(len(self.decoder.flat_rows), attention.shape[1]) from error
        for name, rows in self.sizes.items():
            self.positions[name] += rows * input_ids.shape[1]
        return h

    def add_logits(self, logits, input_ids, attention, positions):
        h = self.step(input_ids, attention, positions)
        if logits is None:
            logits = h.new_zeros(len(input_ids), h.shape[-1])
        return logits.index_add_(0, self.decoder.flat_rows, self.scale * h)


def out_of_memory(rows: int, width: int) -> GenerationMemoryError:
    return GenerationMemoryError(
        f"out of device memory decoding {rows} rows at width {width}: "
        "lower model.generation.batch_size or model.generation.max_kv_cache_gb"
    )


# Models up to this size get fused projections (a copy of their attention and MLP weights, made
# per decode call, with q/k widened by RoPE's rotation): it pays only while a decode step is bound
# by per-operator overhead. Measured per single-model sampling call (batch 64, 6 tokens, fused vs
# not): 83k parameters about even, 0.66M 20% slower, 2.6M 15% slower (BENCHMARKS.md).
FUSE_MAX_PARAMETERS = 250_000
# Models up to this size, decoding equal-sized row sets together, get their weights stacked (a
# copy per decode call) for one batched matmul per projection instead of one matmul per model.
STACK_MAX_PARAMETERS = 20_000_000


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def choose_engine(models: list[nn.Module], requested: str) -> str:
    if requested not in ENGINES:
        raise ConfigError(f"generation engine {requested!r} is not one of {', '.join(ENGINES)}")
    lean = all(unsupported_reason(m) is None for m in models)
    if requested == "auto":
        if not lean:
            return "transformers"
        return "stacked" if len({architecture_key(m) for m in models}) == 1 else "separate"
    if requested in ("stacked", "separate") and not lean:
        reasons = {unsupported_reason(m) for m in models} - {None}
        raise ConfigError(f"generation engine {requested!r} does not support {', '.join(sorted(reasons))}")
    if requested == "stacked" and len({architecture_key(m) for m in models}) > 1:
        raise ConfigError("generation engine 'stacked' needs the policy and reference to share one architecture")
    return requested


def make_runners(policy: nn.Module, reference: nn.Module, weights: Tensor, width: int, engine: str) -> list:
    """Runners for the models with any non-zero weight: [R, 2] weights on (policy, reference)."""
    used = [
        (k, model, name, torch.nonzero(weights[:, k] != 0).squeeze(-1))
        for k, (model, name) in enumerate(((policy, "policy"), (reference, "reference")))
    ]
    used = [u for u in used if u[3].numel()]
    engine = choose_engine([u[1] for u in used], engine)
    total = len(weights)
    if engine == "transformers":
        return [_TransformersRunner(model, rows, weights[rows, k], name, total) for k, model, name, rows in used]
    largest = max((parameter_count(u[1]) for u in used), default=0)
    fuse, stack = largest <= FUSE_MAX_PARAMETERS, largest <= STACK_MAX_PARAMETERS
    groups = [used] if engine == "stacked" else [[u] for u in used]
    return [
        _StackedRunner(
            [u[1] for u in g],
            [u[3] for u in g],
            [weights[u[3], u[0]] for u in g],
            [u[2] for u in g],
            width,
            fuse,
            stack,
            total,
        )  # fmt: skip
        for g in groups
    ]


def mixed_logits(runners: list[_Runner], input_ids: Tensor, attention: Tensor, positions: Tensor) -> Tensor:
    """Next-token logits of every row's mixture: [R, V] (fp32)."""
    if len(runners) == 1 and runners[0].covers_all_rows_alone:  # vanilla / best-of-N: the policy's own
        return runners[0].logits(input_ids, attention, positions)
    logits = None
    for runner in runners:
        logits = runner.add_logits(logits, input_ids, attention, positions)
    return logits


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
    device = prompt_ids.device
    weights = mixture_weights(sources, coef)  # [R, 2]
    positions = prompt_ids.shape[1] + spec.max_new_tokens
    need = [(model, int((weights[:, k] != 0).sum())) for k, model in enumerate((policy, reference))]
    check_kv_budget([(model, rows) for model, rows in need if rows], positions, spec)
    runners = make_runners(policy, reference, weights, positions, spec.engine)
    rows, width = prompt_ids.shape
    # Columns of the attention mask for every position decoded, allocated once: [R, P + T].
    full_attention = F.pad(prompt_mask.long(), (0, spec.max_new_tokens), value=1)
    attention = full_attention[:, :width]
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    step_ids = prompt_ids
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    tokens, masks, logprobs = [], [], []
    for _ in range(spec.max_new_tokens):
        logits = mixed_logits(runners, step_ids, attention, position_ids)
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
        tokens.append(token)
        logprobs.append(logprob)
        if spec.eos_token_id is not None and finished.all():
            break
        step_ids = token[:, None]
        width += 1
        attention = full_attention[:, :width]
        position_ids = position_ids[:, -1:] + 1
    tokens = torch.stack(tokens, dim=1)
    masks = torch.stack(masks, dim=1) if masks else torch.ones_like(tokens)
    return Decoded(
        tokens=tokens,
        mask=masks,
        logprobs=torch.stack(logprobs, dim=1),
        positions={name: sum(r.positions.get(name, 0) for r in runners) for name in ("policy", "reference")},
        prompt_width=prompt_ids.shape[1],
    )
