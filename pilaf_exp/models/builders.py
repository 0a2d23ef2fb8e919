"""Model builders: tiny seeded Llama policies and reward models for the embedded task, and
pretrained checkpoints (hub id or local path) for real tasks."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaConfig, PreTrainedModel

from pilaf_exp.infra.errors import ConfigError
from pilaf_exp.models.loading import load_pretrained


def _llama_config(vocab_size: int, hidden_size: int, num_layers: int, num_heads: int, max_positions: int, **extra):
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_positions,
        **extra,
    )


def tiny_llama(
    vocab_size: int,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 32,
    seed: int = 0,
    attn_implementation: str = "sdpa",
) -> PreTrainedModel:
    """A randomly initialised (seeded) Llama causal LM, built through the Auto class family."""
    config = _llama_config(vocab_size, hidden_size, num_layers, num_heads, max_positions)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)


def seeded_reward_model(
    vocab_size: int,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 32,
    seed: int = 0,
    attn_implementation: str = "sdpa",
) -> PreTrainedModel:
    """A Llama sequence classifier with a scalar head and fixed seeded random weights.

    Its vocabulary has one extra id (= vocab_size) used only as padding, so the classifier's
    "score at the last non-pad token" rule never mistakes a real token for padding.
    """
    config = _llama_config(
        vocab_size + 1, hidden_size, num_layers, num_heads, max_positions, num_labels=1, pad_token_id=vocab_size
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation=attn_implementation)
        # The default head init (std 0.02) is tiny; a unit-scale head makes the score depend on
        # the whole hidden state rather than on a few large directions. Calibration rescales it.
        torch.nn.init.normal_(model.score.weight, std=1.0)
    return model


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ConfigError(f"dtype={name!r} is not a torch dtype: expected float32, bfloat16 or float16")
    return dtype


def pretrained_causal_lm(path: str, dtype: str = "float32", attn_implementation: str = "sdpa") -> PreTrainedModel:
    """Any causal LM by hub id or local checkpoint directory (the paper's policy and reference)."""
    return load_pretrained(
        AutoModelForCausalLM, path, "model.policy.path", dtype=_dtype(dtype), attn_implementation=attn_implementation
    )


def pretrained_reward_model(path: str, dtype: str = "float32", attn_implementation: str = "sdpa") -> PreTrainedModel:
    """Any sequence classifier with a scalar head (e.g. Skywork-Reward-Llama-3.1-8B) by hub id or path."""
    model = load_pretrained(
        AutoModelForSequenceClassification,
        path,
        "oracle.model.path",
        dtype=_dtype(dtype),
        attn_implementation=attn_implementation,
    )
    if model.config.num_labels != 1:
        raise ConfigError(f"oracle.model.path={path!r} has {model.config.num_labels} labels: a reward model has 1")
    return model
