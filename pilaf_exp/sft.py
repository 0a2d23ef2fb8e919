"""Supervised fine-tuning of the reference policy (a Lightning module and its trainer)."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset


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
    model: nn.Module, demonstrations: Tensor, prompt_length: int, lr: float, batch_size: int, steps: int, seed: int
) -> nn.Module:
    """`steps` AdamW steps over the demonstrations ([N, P + T]), reshuffled every epoch; fewer
    demonstrations than steps * batch_size means several epochs (the overfitted init)."""
    loader = DataLoader(
        TensorDataset(demonstrations),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    trainer.fit(SFTModule(model, prompt_length, lr), loader)
    return model
