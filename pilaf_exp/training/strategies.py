"""Lightning strategies that need Python objects a YAML file cannot name directly."""

from __future__ import annotations

from hydra.utils import get_class
from lightning.pytorch.strategies import FSDPStrategy


def fsdp_strategy(layer_class: str, activation_checkpointing: bool = False, sharding_strategy: str = "FULL_SHARD"):
    """FSDP sharding every `layer_class` module (e.g. LlamaDecoderLayer) of the policy, and of the
    frozen models, which hold no gradients or optimizer state. `use_orig_params` lets frozen and
    trainable parameters live in one module tree."""
    layer = get_class(layer_class)
    return FSDPStrategy(
        auto_wrap_policy={layer},
        activation_checkpointing_policy={layer} if activation_checkpointing else None,
        sharding_strategy=sharding_strategy,
        use_orig_params=True,
    )
