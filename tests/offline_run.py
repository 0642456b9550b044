"""Reads a W&B offline run (`offline-run-*/run-*.wandb`) the way `wandb sync` would send it: config, summary,
history rows, logged artifacts and exit code, for tests that check what W&B itself would show.

The file is a log of protobuf `Record`s (wandb.proto.wandb_internal_pb2) in 32 KiB blocks, leveldb-log
style: a 7-byte file header (":W&B", magic, version), then chunks with a 7-byte header (crc32, length,
type: 1 full, 2 first, 3 middle, 4 last); a block tail shorter than a chunk header is zero padding.
wandb 0.31 ships no reader for it (wandb-core, in Go, writes it), hence this one.

The summary is replayed in record order, as the server builds it: wandb-core writes a summary update for
every history row it flushes, and explicit `run.summary[...]` writes are summary updates too, so a row
flushed after an explicit write overwrites it (issue 14, bug 1).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 32 * 1024
CHUNK_HEADER = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    run_id: str = ""
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    artifacts: list = field(default_factory=list)  # ArtifactRecord protobufs
    exit_code: int | None = None


def _records(path: Path):
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file")
    pos, parts = 7, []
    while pos + CHUNK_HEADER.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER.size:
            pos += left
            continue
        _crc, length, kind = CHUNK_HEADER.unpack_from(data, pos)
        if kind == 0:  # zero padding up to the end of the block
            pos += left
            continue
        parts.append(data[pos + CHUNK_HEADER.size:pos + CHUNK_HEADER.size + length])
        pos += CHUNK_HEADER.size + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record


def _key(item) -> str:
    return item.key or ".".join(item.nested_key)


def _apply(target: dict, updates, removes=()) -> None:
    for item in updates:
        target[_key(item)] = json.loads(item.value_json)
    for item in removes:
        target.pop(_key(item), None)


def read_offline_run(run_dir: Path) -> OfflineRun:
    (path,) = Path(run_dir).glob("run-*.wandb")
    run = OfflineRun()
    for record in _records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id = record.run.run_id
            _apply(run.config, record.run.config.update)
        elif kind == "config":
            _apply(run.config, record.config.update, record.config.remove)
        elif kind == "summary":
            _apply(run.summary, record.summary.update, record.summary.remove)
        elif kind == "history":
            row: dict = {}
            _apply(row, record.history.item)
            run.history.append(row)
        elif kind == "artifact":
            run.artifacts.append(record.artifact)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def find_offline_run(wandb_dir: Path, run_id: str) -> Path:
    (run_dir,) = Path(wandb_dir).glob(f"offline-run-*-{run_id}")
    return run_dir
