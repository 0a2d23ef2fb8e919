"""The prompt stream: one seeded order, cut between ranks and into micro-batches."""

from __future__ import annotations

import torch

from pilaf_exp.data.prompts import Prompts
from pilaf_exp.data.stream import prompt_stream

PROMPTS = Prompts.unpadded(torch.arange(100)[:, None].repeat(1, 3))


def stream_ids(**kwargs) -> list[list[int]]:
    return [ids[:, 0].tolist() for ids, _ in prompt_stream(PROMPTS, batch_size=8, batches=5, seed=7, **kwargs)]


def test_ranks_split_each_step_of_one_seeded_stream():
    ranks = [stream_ids(rank=r, world_size=2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 5 and all(len(b) == 8 for b in ranks[0] + ranks[1])
    # The two-rank stream is the one-rank stream of twice the length, step by step.
    doubled = [ids[:, 0].tolist() for ids, _ in prompt_stream(PROMPTS, batch_size=16, batches=5, seed=7)]
    assert [a + b for a, b in zip(*ranks)] == doubled
    flat = [i for step in ranks[0] + ranks[1] for i in step]
    assert len(set(flat)) == len(flat) == 80  # 80 < 100 prompts: no prompt is drawn twice


def test_micro_batches_cover_each_step_in_order():
    steps = stream_ids()
    micro = stream_ids(micro_batch_size=2)
    assert [i for step in steps for i in step] == [i for batch in micro for i in batch]
    assert all(len(batch) == 2 for batch in micro)
