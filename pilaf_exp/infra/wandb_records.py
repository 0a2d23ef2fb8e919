"""Read an offline W&B run back: the records of its `.wandb` transaction log, as `wandb sync` uploads them.

The log is LevelDB's log format (32 KiB blocks of checksummed FULL / FIRST / MIDDLE / LAST
fragments after a 7-byte ":W&B" header) holding `wandb.proto.wandb_internal_pb2.Record`s. W&B
reads it in its Go core; this is the same format read with W&B's own protobuf classes, for
checking what an offline run holds before it is synced (and for the tests).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
IDENT = b":W&B"


def records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    """Every complete record of a `.wandb` file, in order (a torn last record, as a kill leaves, is skipped)."""
    data = Path(path).read_bytes()
    if data[:4] != IDENT:
        raise ValueError(f"{path} is not a W&B transaction log")
    position, pending = HEADER, b""
    while position + HEADER <= len(data):
        room = BLOCK - position % BLOCK
        if room < HEADER:  # a block's trailer: too small for a header, zero-filled
            position += room
            continue
        checksum, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        chunk = data[position + HEADER : position + HEADER + length]
        position += HEADER + length
        if kind == 0 or len(chunk) < length or zlib.crc32(bytes([kind]) + chunk) & 0xFFFFFFFF != checksum:
            break  # zero padding or a torn write: the end of what was written in full
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def items(entries: Any) -> dict[str, Any]:
    """{key: value} of config / summary / history items; a `nested_key` path becomes nested dicts
    (a logged table: {"outputs/final_table": {"_type": "table-file", "path": ...}})."""
    out: dict[str, Any] = {}
    for item in entries:
        path = [item.key] if item.key else list(item.nested_key)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = json.loads(item.value_json)
    return out


@dataclass
class OfflineRun:
    """What one offline run directory (`offline-run-<time>-<id>`) holds."""

    id: str = ""
    project: str = ""
    group: str = ""
    job_type: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # define_metric: name or glob -> settings
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    files: Path | None = None  # the run's files/ directory: media (config and summary live in the .wandb log offline)


def read_offline_run(run_dir: Path) -> OfflineRun:
    """The run, config, define_metric, history, summary and artifact records of an offline run directory."""
    run_dir = Path(run_dir)
    (log,) = run_dir.glob("run-*.wandb")
    out = OfflineRun(files=run_dir / "files")
    for record in records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out.id, out.project, out.group, out.job_type = run.run_id, run.project, run.run_group, run.job_type
            out.name, out.tags = run.display_name, list(run.tags)
            out.config |= items(run.config.update)
        elif kind == "config":
            out.config |= items(record.config.update)
            for item in record.config.remove:
                out.config.pop(item.key, None)
        elif kind == "history":
            out.history.append(items(record.history.item))
        elif kind == "summary":
            out.summary |= items(record.summary.update)
        elif kind == "metric":
            metric = record.metric
            summary = [f.name for f, on in metric.summary.ListFields() if on]
            settings = {"step_metric": metric.step_metric, "summary": summary}
            out.metrics[metric.name or metric.glob_name] = settings
        elif kind == "artifact":
            manifest = [entry.path for entry in record.artifact.manifest.contents]
            out.artifacts.append({"name": record.artifact.name, "type": record.artifact.type, "files": manifest})
    return out


def offline_runs(wandb_dir: Path) -> list[OfflineRun]:
    """Every offline run under a `wandb/` directory, oldest first (a resumed run has one per process)."""
    return [read_offline_run(path) for path in sorted(Path(wandb_dir).glob("offline-run-*"))]
