"""Stop signals: SIGUSR1 (SLURM's pre-emption warning) handled like SIGTERM, and leaving a SLURM
job so that it is requeued rather than reported finished."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

RECEIVED: set[str] = set()  # stop signals this process received


def on_usr1(*_: Any) -> None:
    RECEIVED.add("SIGUSR1")
    os.kill(os.getpid(), signal.SIGTERM)  # from here on the SIGTERM path: checkpoint, then exit


@contextmanager
def usr1_as_sigterm() -> Iterator[None]:
    """SIGUSR1 (SLURM's pre-emption warning) stops the run like SIGTERM: checkpoint, then exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGUSR1, on_usr1)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)


def under_slurm() -> bool:
    return "SLURM_JOB_ID" in os.environ


def leave_for_requeue() -> None:
    """Under SLURM, a stopped run must not look finished: submitit would hand the sweep an empty
    result while SLURM runs the job again. A SIGUSR1 (time limit or pre-emption warning) asks
    SLURM to requeue the job; a SIGTERM comes with the requeue or cancellation already decided."""
    job = os.environ["SLURM_JOB_ID"]
    if "SIGUSR1" in RECEIVED:
        subprocess.run(["scontrol", "requeue", job], check=False)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(0)  # skip submitit's result file: the requeued job writes it when it finishes
