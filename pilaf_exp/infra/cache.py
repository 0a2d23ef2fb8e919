"""On-disk caches shared between runs, keyed by a hash of what determines their content."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from pilaf_exp.infra.atomic import publish_once

log = logging.getLogger(__name__)


def cache_key(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def checkpoint_fingerprint(path: str | None) -> dict | None:
    """Names, sizes and mtimes of a local checkpoint's files, so a cache built from it is rebuilt
    when it changes in place; None for no path or a hub id (the id and revision name it)."""
    if not path or not Path(path).expanduser().is_dir():
        return None
    files = sorted(p for p in Path(path).expanduser().iterdir() if p.is_file())
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, as `sha256sum` prints it (a stored checkpoint's identity)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_fingerprint(*names: str) -> str:
    """sha256 of the source files of the named modules or packages (every .py below a package): a
    cache keyed by it is rebuilt when the code that computes its content changes, not only the config."""
    digest = hashlib.sha256()
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ValueError(f"no module or package named {name}")
        origin = Path(spec.origin)
        files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
        for file in files:
            digest.update(f"{name}/{file.relative_to(origin.parent)}".encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def weights_fingerprint(*modules: torch.nn.Module) -> str:
    """sha256 of the modules' parameters and buffers (names, dtypes, shapes, values): equal iff the
    weights are. A cache computed from models is keyed by what they are, not only by the config that
    built them (a code change can change the weights, e.g. an oracle calibrated on another draw)."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            flat = tensor.detach().cpu().contiguous().reshape(-1)  # 0-d buffers too (the calibration)
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def one_builder(target: Path) -> Iterator[None]:
    """Held while a cache entry is built: concurrent runs (a joblib sweep's workers) that miss the
    same entry wait for the first to publish it instead of building it again. Best effort: where the
    file system refuses a lock, each builds and `publish_once` keeps the first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError:
            pass
        yield


def build_once(target: Path, ready: Path, write: Callable[[Path], None]) -> bool:
    """Create the cache entry `target` (a file or a directory) with `write(path)` unless `ready`
    exists: written to a staging path, then published in one rename, under `one_builder`'s lock.
    True when this call built it, False when it was there (or another run built it meanwhile)."""
    if ready.exists():
        return False
    with one_builder(target):
        if ready.exists():  # built while this run waited
            return False
        log.info("cache miss: building %s", target)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
        write(staging / target.name)
        publish_once(staging / target.name, target)
        staging.rmdir()
        return True


def load_or_build_model(
    root: Path, spec: dict, build: Callable[[], PreTrainedModel], dtype: torch.dtype = torch.float32
) -> PreTrainedModel:
    """The causal LM cached under `spec`'s hash, built (and cached) on a miss."""
    target = root / cache_key(spec)

    def write(path: Path) -> None:
        build().save_pretrained(path)
        (path / "spec.json").write_text(json.dumps(spec, indent=2, sort_keys=True))

    build_once(target, target / "config.json", write)
    # Reload even after a build, so a fresh and a cached run use the same stored weights.
    return AutoModelForCausalLM.from_pretrained(target, dtype=dtype)


def load_or_compute_object(root: Path, spec: dict, compute: Callable[[], Any]) -> Any:
    """A tensor-holding object cached under `spec`'s hash (torch.save), computed (and cached) on a miss."""
    target = root / f"{cache_key(spec)}.pt"
    build_once(target, target, lambda path: torch.save({"spec": spec, "result": compute()}, path))
    return torch.load(target, weights_only=False)["result"]
