"""Supervised fine-tuning of the reference policy, cached on disk by its config."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset
from transformers import AutoModelForCausalLM, PreTrainedModel

log = logging.getLogger(__name__)


class SFTModule(L.LightningModule):
    """Next-token cross-entropy on demonstration responses (prompt tokens are not targets)."""

    def __init__(self, model: nn.Module, prompt_length: int, lr: float) -> None:
        super().__init__()
        self.model = model
        self.prompt_length = prompt_length
        self.lr = lr

    def training_step(self, batch: tuple[Tensor], batch_idx: int) -> Tensor:
        (sequences,) = batch  # [B, P + T]
        logits = self.model(input_ids=sequences).logits[:, self.prompt_length - 1 : -1]  # [B, T, V]
        loss = F.cross_entropy(logits.flatten(0, 1), sequences[:, self.prompt_length :].flatten())
        self.log("sft/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.model.parameters(), lr=self.lr)


def train_sft(
    model: nn.Module, demonstrations: Tensor, prompt_length: int, lr: float, batch_size: int, seed: int
) -> nn.Module:
    loader = DataLoader(
        TensorDataset(demonstrations),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    trainer.fit(SFTModule(model, prompt_length, lr), loader)
    return model


def cache_key(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def load_or_build(cache_root: Path, spec: dict, build: Callable[[], PreTrainedModel]) -> PreTrainedModel:
    """Load the model cached under `spec`'s hash, or build it and cache it atomically.

    Concurrent runs (a local sweep) may build the same entry; the first rename wins and the
    others load it, so every run uses byte-identical weights.
    """
    target = cache_root / cache_key(spec)
    if not (target / "config.json").exists():
        log.info("SFT cache miss: training the reference into %s", target)
        model = build()
        cache_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=cache_root, prefix=".staging-"))
        model.save_pretrained(staging)
        (staging / "spec.json").write_text(json.dumps(spec, indent=2, sort_keys=True))
        try:
            os.rename(staging, target)
        except OSError:  # another run cached it first
            shutil.rmtree(staging, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(target)
    return model
