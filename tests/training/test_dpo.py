"""DPO loss, log-prob masking and implicit reward against hand-computed values."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch import nn

from pilaf_exp.data.text import join
from pilaf_exp.models.logprobs import implicit_reward, response_token_logprobs, sequence_logprob
from pilaf_exp.training.dpo import dpo_loss


class TableLM(nn.Module):
    """A 'model' whose next-token logits depend only on the current token: logits[t] = table[x_t]."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table
        self.seen: dict = {}

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0, **_):
        self.seen = {"attention_mask": attention_mask, "position_ids": position_ids}
        logits = self.table[input_ids]
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)


def test_sequence_logprob_sums_response_tokens_only():
    # Next-token distribution after token a: probabilities table_probs[a].
    probs = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    model = TableLM(probs.log())
    prompt = torch.tensor([[0, 2], [0, 1]])  # row 1 is left-padded: real prompt is just [1]
    prompt_mask = torch.tensor([[1, 1], [0, 1]])
    response = torch.tensor([[1, 1, 0], [2, 0, 0]])
    response_mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # row 1: last token is padding
    logp = sequence_logprob(model, prompt, prompt_mask, response, response_mask)
    # Row 0: p(1|2) p(1|1) p(0|1) = 0.2 * 0.6 * 0.1 ; prompt token p(2|0) is not counted.
    # Row 1: p(2|1) p(0|2) = 0.3 * 0.2 ; the padded position is not counted.
    expected = torch.tensor([math.log(0.2 * 0.6 * 0.1), math.log(0.3 * 0.2)])
    torch.testing.assert_close(logp, expected)
    tokens = response_token_logprobs(model, prompt, prompt_mask, response, response_mask)
    assert tokens[1, 2] == 0
    # Positions count real tokens only: row 1's first real token is at position 0 and the
    # trailing pad repeats the last position.
    assert model.seen["position_ids"][1].tolist() == [0, 0, 1, 2, 2]


def test_temperature_divides_logits_before_normalising():
    logits = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    model = TableLM(logits)
    prompt, response = torch.tensor([[0]]), torch.tensor([[1]])
    ones = torch.ones(1, 1, dtype=torch.long)
    logp = sequence_logprob(model, prompt, ones, response, ones, temperature=2.0)
    expected = torch.log_softmax(torch.tensor([0.0, 1.0]), -1)[1]
    torch.testing.assert_close(logp, expected[None])


def test_join_builds_positions_from_mask():
    ids, mask, pos = join(
        torch.tensor([[5, 6]]), torch.tensor([[0, 1]]), torch.tensor([[7, 8]]), torch.tensor([[1, 0]])
    )
    assert ids.tolist() == [[5, 6, 7, 8]]
    assert mask.tolist() == [[0, 1, 1, 0]]
    assert pos.tolist() == [[0, 0, 1, 1]]


def test_implicit_reward_and_dpo_loss_match_hand_computation():
    beta = 0.1
    pc, pr = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -2.0])
    rc, rr = torch.tensor([-3.5, -4.0]), torch.tensor([-3.0, -3.0])
    torch.testing.assert_close(implicit_reward(pc, rc, beta), torch.tensor([0.05, -0.1]))
    loss, margin = dpo_loss(pc, pr, rc, rr, beta)
    # margins: 0.1*((-3+3.5) - (-4+3)) = 0.15 ; 0.1*((-5+4) - (-2+3)) = -0.2
    torch.testing.assert_close(margin, torch.tensor([0.15, -0.2]))
    expected = -(math.log(1 / (1 + math.exp(-0.15))) + math.log(1 / (1 + math.exp(0.2)))) / 2
    assert abs(loss.item() - expected) < 1e-6


def test_dpo_loss_gradient_raises_chosen_lowers_rejected():
    chosen = torch.tensor([-2.0], requires_grad=True)
    rejected = torch.tensor([-2.0], requires_grad=True)
    loss, _ = dpo_loss(chosen, rejected, torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.5)
    loss.backward()
    # d/dc -log sigmoid(beta (c - r)) at margin 0 = -beta/2
    assert chosen.grad.item() == -0.25 and rejected.grad.item() == 0.25
