"""The annotation ledger's background writer: entries land in order, a failure is raised in the
training thread and stops later entries from landing (the on-disk entries stay a prefix)."""

from __future__ import annotations

import pytest
import torch

from pilaf_exp.infra.ledger import Ledger, ledger_entry
from pilaf_exp.sampling.pairs import PairBatch


def entry(step: int) -> dict:
    return {"step": step, "payload": torch.full((3,), float(step))}


def test_entries_land_in_order_and_flush_waits_for_them(tmp_path):
    ledger = Ledger(tmp_path / "ledger")
    for step in range(25):
        ledger.write(step, 0, entry(step))
    entries = ledger.entries()  # flushes first
    assert [e["step"] for e in entries] == list(range(25))
    assert torch.equal(entries[7]["payload"], torch.full((3,), 7.0))
    assert ledger.read(24, 0)["step"] == 24 and ledger.read(25, 0) is None


def test_a_failed_write_is_raised_and_later_entries_do_not_land(tmp_path):
    blocker = tmp_path / "ledger"
    blocker.write_text("a file where the ledger directory should be")
    ledger = Ledger(blocker)
    ledger.write(0, 0, entry(0))
    with pytest.raises(RuntimeError, match="annotation ledger could not be written"):
        ledger.flush()
    with pytest.raises(RuntimeError, match="annotation ledger could not be written"):
        ledger.write(1, 0, entry(1))


def test_an_entry_owns_its_tensors(tmp_path):
    tokens = torch.zeros(2, 3, dtype=torch.long)
    pairs = PairBatch(tokens, tokens, tokens, tokens, tokens, tokens, torch.zeros(2), torch.zeros(2), 2.0)
    label = torch.tensor([True, False])
    saved = ledger_entry(5, pairs, label, torch.Generator().manual_seed(0))
    tokens.fill_(9)  # the training thread may reuse its buffers before the writer saves the entry
    label.fill_(True)
    assert saved["pairs"]["response_a"].sum() == 0 and saved["a_preferred"].tolist() == [True, False]
