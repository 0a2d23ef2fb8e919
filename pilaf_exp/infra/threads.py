"""How many intra-op threads a run gives torch: its share of the cores, decided before any model is built.

torch's default is every core the process sees. Runs that share a machine (a parallel local sweep,
SLURM jobs on one node without CPU binding) then oversubscribe it, and OpenMP's spinning threads
slow each other down several-fold. `threads: auto` takes this process's CPU affinity, then narrows
it to SLURM's allotment or to the joblib launcher's share (cores / parallel jobs)."""

from __future__ import annotations

import os

import torch
from hydra.core.hydra_config import HydraConfig


def parallel_jobs() -> int:
    """Jobs of this sweep that run at once on this machine under Hydra's joblib launcher, else 1."""
    if not HydraConfig.initialized():
        return 1
    launcher = HydraConfig.get().get("launcher") or {}
    if "joblib" not in str(launcher.get("_target_", "")).lower():
        return 1
    jobs = int(launcher.get("n_jobs", -1))
    return (os.cpu_count() or 1) if jobs <= 0 else jobs


def thread_budget(setting: int | str) -> int:
    """`threads` from the config: a number as given, or `auto` (see the module docstring)."""
    if setting != "auto":
        return int(setting)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm:
        cores = min(cores, int(slurm))
    return max(1, cores // parallel_jobs())


def apply_thread_budget(setting: int | str) -> int:
    threads = thread_budget(setting)
    torch.set_num_threads(threads)
    return threads
