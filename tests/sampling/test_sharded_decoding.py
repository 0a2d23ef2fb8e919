"""Decoding under real FSDP sharding on 2 CPU processes (gloo): every sampler and the evaluator give
each rank what the same models unsharded give it, while the ranks hold different numbers of rows
(different chunk counts, one rank with an empty evaluation batch) whose responses stop at EOS at
different steps. Without the lock-step (`Lockstep.of` forced to None) the same run fails within
the process group's timeout instead of hanging."""

from __future__ import annotations

import copy
import json
import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from pilaf_exp.data.prompts import Prompts
from pilaf_exp.evaluation.evaluator import Evaluator
from pilaf_exp.evaluation.schedule import EvalSchedule
from pilaf_exp.infra.ranks import Ranks
from pilaf_exp.labelling.oracle import RewardOracle
from pilaf_exp.models.builders import seeded_reward_model, tiny_llama
from pilaf_exp.sampling import sharding
from pilaf_exp.sampling.decoding import DecodeSpec
from pilaf_exp.sampling.samplers import BestOfNSampler, HybridSampler, PilafSampler, VanillaSampler
from pilaf_exp.training.strategies import shard_models

VOCAB, EOS = 16, 3
SAMPLERS = {
    "vanilla": VanillaSampler(),
    "best_of_n": BestOfNSampler(n=2),
    "hybrid": HybridSampler(),
    "pilaf": PilafSampler(coef=0.5),
}
ROWS = (5, 2)  # prompts per rank: 10 vs 4 decode rows, 5 vs 2 chunks of 2
GROUP_TIMEOUT = 60  # seconds: a collective one rank never joins fails after this


def models() -> nn.Module:
    box = nn.Module()
    box.policy = tiny_llama(VOCAB, hidden_size=32, num_heads=4, max_positions=32, seed=0)
    box.reference = tiny_llama(VOCAB, hidden_size=32, num_heads=4, max_positions=32, seed=1)
    box.oracle = RewardOracle(seeded_reward_model(VOCAB, hidden_size=32, max_positions=32, seed=2), VOCAB)
    return box.eval().requires_grad_(False)


def rank_results(box: nn.Module, rank: int, reduce) -> dict:
    """Each sampler's pairs and the evaluation's metrics for this rank's prompts."""
    prompts = torch.randint(0, VOCAB, (ROWS[rank], 4), generator=torch.Generator().manual_seed(rank))
    spec = DecodeSpec(12, eos_token_id=EOS, max_rows=2)
    out = {}
    for name, sampler in SAMPLERS.items():
        generator = torch.Generator().manual_seed(100 + rank)
        pairs = sampler.sample(box.policy, box.reference, prompts, torch.ones_like(prompts), spec, generator)
        masks = torch.cat([pairs.mask_a, pairs.mask_b])  # decode rows in order (best_of_n: the kept ones)
        out[name] = {"a": pairs.response_a.tolist(), "b": pairs.response_b.tolist(), "lengths": masks.sum(1).tolist()}
    test = Prompts.unpadded(torch.randint(0, VOCAB, (3, 4), generator=torch.Generator().manual_seed(9)))
    schedule = EvalSchedule(every=1, last=2)
    evaluator = Evaluator(
        test, spec, beta=0.1, seed=0, schedule=schedule, batch_size=1
    )  # batches: 2 on rank 0, 1 on rank 1
    out["eval"] = evaluator(box.policy, box.reference, box.oracle, 1, Ranks(rank, 2, reduce))
    return out


def worker(rank: int, port: int, out_dir: str, lockstep: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=GROUP_TIMEOUT))
    if not lockstep:
        sharding.Lockstep.of = staticmethod(lambda *models: None)
    plain = models()
    box = copy.deepcopy(plain)
    shard_models(box, LlamaDecoderLayer, torch.device("cpu"), use_orig_params=True)

    def reduce(t: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(t)
        return t

    sharded = rank_results(box, rank, reduce)
    unsharded = rank_results(plain, rank, reduce)
    Path(out_dir, f"rank_{rank}.json").write_text(json.dumps({"sharded": sharded, "unsharded": unsharded}))
    dist.barrier()
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_ranks(tmp_path: Path, lockstep: bool, deadline: float) -> str | None:
    """None when both ranks finished cleanly, else the failure; a hang fails the test."""
    context = mp.start_processes(worker, (free_port(), str(tmp_path), lockstep), nprocs=2, join=False)
    start = time.monotonic()
    try:
        while not context.join(timeout=1):
            if time.monotonic() - start > deadline:
                for process in context.processes:
                    process.kill()
                pytest.fail(f"the ranks hung for {deadline} s")
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as error:
        return str(error)
    return None


@pytest.mark.slow
def test_sharded_decoding_matches_unsharded_per_rank_and_keeps_ranks_together(tmp_path):
    failure = run_two_ranks(tmp_path, lockstep=True, deadline=600)
    assert failure is None, failure[-3000:]
    ranks = [json.loads((tmp_path / f"rank_{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:
        assert rank["sharded"] == rank["unsharded"]  # pairs and evaluation, bit for bit
    # The case that needs the lock-step: rows stop at EOS at different steps, and a chunk of one rank
    # (2 decode rows) is done before the same chunk of the other rank (rank 1 has fewer chunks too).
    for rank in ranks:
        assert len({n for name in SAMPLERS for n in rank["sharded"][name]["lengths"]}) > 1
    two_draws = ("vanilla", "hybrid", "pilaf")  # decode rows = [y_a; y_b], in chunks of 2
    chunks = {
        name: [[max(r["sharded"][name]["lengths"][i : i + 2]) for i in (0, 2)] for r in ranks] for name in two_draws
    }
    assert any(widths[0] != widths[1] for widths in chunks.values()), chunks
    assert ranks[0]["sharded"]["eval"] == ranks[1]["sharded"]["eval"]  # reduced over both ranks


@pytest.mark.slow
def test_without_the_lockstep_the_sharded_ranks_fail_instead_of_hanging(tmp_path):
    failure = run_two_ranks(tmp_path, lockstep=False, deadline=6 * GROUP_TIMEOUT + 300)
    assert failure is not None
