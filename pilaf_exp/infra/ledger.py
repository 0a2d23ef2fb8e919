"""The annotation ledger: every labelled pair, stored durably before the gradient step that uses it.

One file per (step, micro-batch) and rank (online DPO), or per (round, sampling batch) (iterative
DPO), holds the pairs, their labels, what they cost and the
sampling generator's state right after they were drawn. A resumed run replays the steps after
its checkpoint from these files instead of sampling and querying the oracle again, so no pair is
lost, re-queried or counted twice, and the run continues bit for bit as if never stopped.

Writes (pickle, fsync, rename) happen on one background thread so the ~10 ms of fsync per step
overlaps the next step's sampling instead of stalling it. One thread, first in first out: the
entries on disk are always a prefix of those written, so a crash loses at most the newest ones,
which a resumed run samples again from the generator state of the last entry it finds, exactly as
an uninterrupted run did. `flush()` (before every checkpoint and at the end) waits for them.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from pathlib import Path
from typing import Any

import torch

from pilaf_exp.infra.atomic import write_atomic
from pilaf_exp.infra.names import LEDGER
from pilaf_exp.infra.timing import Stopwatch


class Ledger:
    def __init__(self, directory: Path, stopwatch: Stopwatch | None = None) -> None:
        self.directory = directory
        self.stopwatch = stopwatch or Stopwatch()  # "ledger": time spent handing entries to the writer
        self._queue: queue.Queue[tuple[Path, dict[str, Any]]] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._error: BaseException | None = None
        self._pending: set[Path] = set()  # queued, not yet on disk

    def path(self, step: int, micro: int) -> Path:
        return self.directory / f"step_{step:08d}_{micro:04d}.pt"

    def read(self, step: int, micro: int) -> dict[str, Any] | None:
        """The entry of (step, micro-batch), or None if it was never written in full."""
        path = self.path(step, micro)
        if path in self._pending:
            self.flush()
        return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None

    def write(self, step: int, micro: int, entry: dict[str, Any]) -> None:
        """Queue the entry for the background writer (an earlier write's failure is raised here)."""
        with self.stopwatch(LEDGER):
            self._raise_failure()
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_in_order, name="ledger-writer", daemon=True)
                self._writer.start()
            path = self.path(step, micro)
            self._pending.add(path)
            self._queue.put((path, entry))

    def flush(self) -> None:
        """Wait until every queued entry is durable on disk; raise if one could not be written."""
        self._queue.join()
        self._raise_failure()

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, in step order."""
        self.flush()
        return [torch.load(p, map_location="cpu", weights_only=False) for p in sorted(self.directory.glob("step_*.pt"))]

    def _write_in_order(self) -> None:
        while True:
            path, entry = self._queue.get()
            try:
                if self._error is None:  # after a failure, later entries must not land (prefix rule)
                    write_atomic(path, lambda f: torch.save(entry, f))
            except BaseException as error:  # noqa: BLE001 - handed to the training thread
                self._error = error
            finally:
                self._pending.discard(path)
                self._queue.task_done()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"the annotation ledger could not be written in {self.directory}") from self._error


def ledger_entry(step: int, pairs: Any, a_preferred: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
    """One micro-batch's pairs (a dataclass of tensors and counts, e.g. `sampling.pairs.PairBatch`;
    copied to the CPU), labels and the generator state after drawing them."""
    fields = {f.name: getattr(pairs, f.name) for f in dataclasses.fields(pairs)}
    own = lambda t: t.detach().to("cpu", copy=True)  # noqa: E731 - the writer thread saves it later
    return {
        "step": step,
        "pairs": {k: own(v) if torch.is_tensor(v) else v for k, v in fields.items()},
        "a_preferred": own(a_preferred),
        "generator": generator.get_state(),
    }
