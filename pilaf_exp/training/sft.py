"""Supervised fine-tuning of the reference policy (a Lightning module and its trainer)."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from pilaf_exp.data.text import join
from pilaf_exp.infra.names import SFT_LOSS


class SFTModule(L.LightningModule):
    """Next-token cross-entropy on demonstration responses (prompt and padding are not targets)."""

    def __init__(self, model: nn.Module, lr: float) -> None:
        super().__init__()
        self.model = model
        self.lr = lr

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        prompt_ids, prompt_mask, response_ids, response_mask = batch  # [B, P], [B, P], [B, T], [B, T]
        input_ids, attention_mask, position_ids = join(prompt_ids, prompt_mask, response_ids, response_mask)
        steps = response_ids.shape[1]
        # Positions P-1 .. P+T-2 predict the T response tokens: [B, T, V].
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        logits = logits[:, -steps - 1 : -1]
        targets = response_ids.masked_fill(response_mask == 0, -100)  # -100: cross_entropy's ignore index
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        self.log(SFT_LOSS, loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.model.parameters(), lr=self.lr)


def train_sft(
    model: nn.Module,
    examples: tuple[Tensor, Tensor, Tensor, Tensor],
    lr: float,
    batch_size: int,
    steps: int,
    seed: int,
    make_trainer: Callable[..., L.Trainer],
) -> nn.Module:
    """`steps` AdamW steps over the examples (prompt ids/mask, response ids/mask), reshuffled every
    epoch; fewer examples than steps * batch_size means several epochs (the overfitted init)."""
    loader = DataLoader(
        TensorDataset(*examples), batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    trainer = make_trainer(
        max_steps=steps, max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(SFTModule(model, lr), loader)
    return model
