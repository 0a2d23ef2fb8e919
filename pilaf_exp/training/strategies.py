"""Lightning strategies that need Python objects a YAML file cannot name directly."""

from __future__ import annotations

from functools import partial

import torch
from hydra.utils import get_class
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.strategies.fsdp import _setup_activation_checkpointing
from torch import nn
from torch.distributed.fsdp import (
    FullOptimStateDictConfig,
    FullStateDictConfig,
    FullyShardedDataParallel,
    OptimStateKeyType,
    StateDictType,
)
from torch.distributed.fsdp._common_utils import FSDP_FLATTENED
from torch.distributed.fsdp.wrap import lambda_auto_wrap_policy
from transformers import PreTrainedModel


def fsdp_strategy(layer_class: str, activation_checkpointing: bool = False, sharding_strategy: str = "FULL_SHARD"):
    """FSDP sharding every `layer_class` module (e.g. LlamaDecoderLayer) of the policy, and of the
    frozen models, which hold no gradients or optimizer state. `use_orig_params` lets frozen and
    trainable parameters live in one module tree."""
    layer = get_class(layer_class)
    return PerModelFSDP(
        layer,
        activation_checkpointing_policy={layer} if activation_checkpointing else None,
        sharding_strategy=sharding_strategy,
        use_orig_params=True,
    )


def outermost(module: nn.Module, kind: type) -> list[nn.Module]:
    """The `kind` modules under `module` that no other `kind` module contains (each whole model)."""
    found: list[nn.Module] = []
    for child in module.children():
        found += [child] if isinstance(child, kind) else outermost(child, kind)
    return found


class PerModelFSDP(FSDPStrategy):
    """Lightning's FSDP with three changes, each needed by a module that holds three models and
    calls them outside the wrapped module's forward (sampling, labelling, evaluation):

    - every whole model (policy, reference, the oracle's network) is an FSDP unit of its own, with
      each `layer` inside it a unit too: a model's forward then gathers its own embeddings and head
      and each layer's weights wherever it is called, in `training_step` or in a hook;
    - the root is initialised as soon as it is wrapped, so a model called before the first
      training step (the step-0 evaluation) is not taken for a root of its own (FSDP refuses that);
    - it runs on CPU (gloo) too. Lightning refuses `FSDPStrategy` with accelerator=cpu by an exact
      type check (`type(strategy) is FSDPStrategy`), which a subclass passes, and passes FSDP the
      device *index*, None on CPU, for which torch asks for an accelerator: here FSDP gets the device.

    At teardown the models become plain modules again with full weights on every rank (what the
    run saves, fingerprints and evaluates afterwards), as after DDP.

    On CPU a checkpoint's full state dict is gathered without Lightning's `offload_to_cpu`: with the
    parameters already on CPU, FSDP's "offload" leaves each entry a view of the unsharded flat
    parameter, which is freed when the context exits, and cloning it crashed the process (SIGSEGV)
    at the first checkpoint of a 2-rank run."""

    def __init__(self, layer: type[nn.Module], **kwargs) -> None:
        super().__init__(**kwargs)
        self.layer = layer

    def _setup_model(self, model: nn.Module) -> nn.Module:
        if any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            raise RuntimeError("the models are already wrapped by FSDP: one trainer.fit per process under FSDP")
        kwargs = {k: v for k, v in self.kwargs.items() if k != "auto_wrap_policy"}
        wrapped = shard_models(
            model,
            self.layer,
            self.root_device,
            cpu_offload=self.cpu_offload,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            **kwargs,
        )
        _setup_activation_checkpointing(wrapped, self._activation_checkpointing_kwargs)
        return wrapped

    def _full_state_dict(self, rank0_only: bool = True):
        """Lightning's full-state-dict context, offloading to CPU only from an accelerator."""
        offload = self.root_device.type != "cpu"
        return FullyShardedDataParallel.state_dict_type(
            self.model,
            StateDictType.FULL_STATE_DICT,
            FullStateDictConfig(offload_to_cpu=offload, rank0_only=rank0_only),
            FullOptimStateDictConfig(offload_to_cpu=offload, rank0_only=rank0_only),
        )

    def lightning_module_state_dict(self) -> dict:
        if self._state_dict_type != "full" or self.root_device.type != "cpu":
            return super().lightning_module_state_dict()
        with self._full_state_dict():
            return self.model.state_dict()

    def optimizer_state(self, optimizer) -> dict:
        if self._state_dict_type != "full" or self.root_device.type != "cpu":
            return super().optimizer_state(optimizer)
        optimizer = getattr(optimizer, "_optimizer", optimizer)  # LightningOptimizer -> the torch one
        with self._full_state_dict():
            state = FullyShardedDataParallel.optim_state_dict(self.model, optimizer)
            if self.global_rank == 0:  # the standard format, as Lightning stores it
                state = FullyShardedDataParallel.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_ID, self.model)
            return state

    def optimizer_state_to_load(self, optimizer: torch.optim.Optimizer, state: dict) -> dict:
        """A checkpoint's full optimizer state (as `optimizer_state` saved it, or a single process) made
        loadable into `optimizer`, whose parameters are this rank's shards (every rank calls this)."""
        with self._full_state_dict(rank0_only=False):
            if isinstance(next(iter(state["state"]), None), int):  # keyed by parameter index
                state = FullyShardedDataParallel.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_NAME, self.model)
            return FullyShardedDataParallel.optim_state_dict_to_load(self.model, optimizer, state)

    def teardown(self) -> None:
        if isinstance(self.model, FullyShardedDataParallel):
            unwrap(self.model)
        super().teardown()


def shard_models(module: nn.Module, layer: type[nn.Module], device: torch.device, **kwargs) -> FullyShardedDataParallel:
    """`module` under FSDP with each whole model in it and each `layer` an FSDP unit, its root
    initialised (see `PerModelFSDP`); `kwargs` go to FullyShardedDataParallel."""
    models = outermost(module, PreTrainedModel)
    unit = lambda m: isinstance(m, layer) or any(m is x for x in models)  # noqa: E731
    wrapped = FullyShardedDataParallel(
        module=module,
        auto_wrap_policy=partial(lambda_auto_wrap_policy, lambda_fn=unit),
        device_id=device if device.type == "cpu" else device.index,
        **kwargs,
    )
    with FullyShardedDataParallel.summon_full_params(wrapped, recurse=False, writeback=False):
        pass  # initialises the root
    return wrapped


def unwrap(root: FullyShardedDataParallel) -> None:
    """Replace every FSDP unit under `root` by the module it wraps, holding the full weights."""
    with FullyShardedDataParallel.summon_full_params(root, recurse=True, writeback=False):
        full = {id(p): p.detach().clone() for p in root.parameters()}
    params = {id(p): p for p in root.parameters()}
    for parent in [root.module, *root.module.modules()]:
        for name, child in list(parent.named_children()):
            if isinstance(child, FullyShardedDataParallel):
                setattr(parent, name, child.module)
    for key, param in params.items():
        param.data = full[key]
        # FSDP marks the parameters it flattened and skips marked ones when it wraps again: the next
        # trainer's FSDP (iterative DPO's next round) would then leave them unsharded and their
        # gradients unreduced, and the ranks' weights would drift apart.
        if hasattr(param, FSDP_FLATTENED):
            delattr(param, FSDP_FLATTENED)
