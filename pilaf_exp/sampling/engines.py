"""Decode engines: how one decode step runs a model (or both) on its rows and adds its logits into
each row's mixture. "stacked" runs both models as one ragged batch on the lean decoder
(`stacked_decoder.py`: shared elementwise operators and attention, one matmul per model), "separate"
runs each model alone on the lean decoder, "transformers" calls the models' own forward with a
`DynamicCache`, and "auto" picks stacked when the two share an architecture, separate when not, and
transformers for architectures the lean decoder does not cover.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from pilaf_exp.infra.errors import ConfigError
from pilaf_exp.sampling.layer_weights import architecture_key, unsupported_reason
from pilaf_exp.sampling.sharding import is_sharded, unwrapped
from pilaf_exp.sampling.stacked_decoder import StackedDecoder

# One operator sequence for both models, each model alone on the lean decoder, or the models' own forward.
ENGINES = ("auto", "stacked", "separate", "transformers")


class GenerationMemoryError(ConfigError):
    """A configured decode batch does not fit; the message names the setting to lower."""


def cache_argument(model: nn.Module) -> str:
    """The forward() keyword for a KV cache: transformers 5.24 renamed `past_key_values` to `cache`."""
    return "cache" if "cache" in inspect.signature(unwrapped(model).forward).parameters else "past_key_values"


class _Runner:
    """Feeds one decode step to its model(s) and adds weight x next-token logits into the mixture.
    `covers_all_rows_alone`: one model, every row, weight 1 (vanilla, best-of-N): its logits are the mixture."""

    covers_all_rows_alone: bool = False

    def step(self, input_ids: Tensor, attention: Tensor, positions: Tensor) -> Tensor:
        """Next-token logits [r, V] of this runner's rows, counting the positions."""
        raise NotImplementedError

    def add_logits(self, logits: Tensor | None, input_ids: Tensor, attention: Tensor, positions: Tensor) -> Tensor:
        raise NotImplementedError


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
        self,
        models: list[nn.Module],
        rows: list[Tensor],
        scales: list[Tensor],
        names: list[str],
        width: int,
        fuse: bool,
        stack: bool,
        total: int,
    ) -> None:
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


# Why a lean engine cannot decode sharded models: the config check's and the decoder's one line.
SHARDED_ENGINES = (
    "reads whole weight matrices, which FSDP shards: under trainer=fsdp or fsdp_cpu use model.generation.engine=auto "
    "or transformers (each model's own forward)"
)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def choose_engine(models: list[nn.Module], requested: str) -> str:
    if requested not in ENGINES:
        raise ConfigError(f"generation engine {requested!r} is not one of {', '.join(ENGINES)}")
    if any(is_sharded(m) for m in models):
        # The lean decoder reads whole weight matrices, which FSDP holds only inside a unit's forward.
        if requested in ("stacked", "separate"):
            raise ConfigError(f"generation engine {requested!r} {SHARDED_ENGINES}")
        return "transformers"
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


def make_runners(
    policy: nn.Module, reference: nn.Module, weights: Tensor, width: int, engine: str, keep: tuple | None = None
) -> list:
    """Runners for the models with any non-zero weight: [R, 2] weights on (policy, reference).
    `keep[k]`: model k runs even without rows of its own, on row 0 with weight 0 (sharded models
    run on every rank alike, `sharding.py`)."""
    used = [
        (k, model, name, torch.nonzero(weights[:, k] != 0).squeeze(-1))
        for k, (model, name) in enumerate(((policy, "policy"), (reference, "reference")))
    ]
    if keep is not None:
        used = [(k, m, n, r if r.numel() else r.new_zeros(1)) if keep[k] else (k, m, n, r[:0]) for k, m, n, r in used]
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
        )
        for g in groups
    ]


def mixed_logits(runners: list[_Runner], input_ids: Tensor, attention: Tensor, positions: Tensor) -> Tensor:
    """Next-token logits of every row's mixture: [R, V] (fp32)."""
    if len(runners) == 1 and runners[0].covers_all_rows_alone:  # vanilla / best-of-N: the policy's own
        return runners[0].step(input_ids, attention, positions)
    logits = None
    for runner in runners:
        logits = runner.add_logits(logits, input_ids, attention, positions)
    return logits
