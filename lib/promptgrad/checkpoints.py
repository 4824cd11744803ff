"""Checkpoints, one policy for every method.

A run's checkpoint file is named by a fingerprint of everything that decides the run (task,
method, settings, models, examples): other settings write another file, so a checkpoint is only
ever resumed by the run that wrote it. A file that cannot be read, or that holds another
configuration than its name says, raises :class:`CheckpointError` and is never used. JSON
checkpoints (the text optimizers) are written atomically; the embedding methods' torch files
through the same ``checkpoint_path``."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be trusted: unreadable, truncated, or from another configuration."""


def fingerprint(*parts) -> str:
    """A short hash of JSON-ready parts (unknown objects by their ``str``)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def checkpoint_path(directory: str | Path | None, task: str, method: str, settings, suffix: str = ".json") \
        -> Path | None:
    """``directory/<task>__<method>__<fingerprint of settings><suffix>``; None without a directory."""
    if not directory:
        return None
    slug = lambda text: "".join(c if c.isalnum() or c in "-_." else "_" for c in text)  # noqa: E731
    return Path(directory) / f"{slug(task)}__{slug(method)}__{fingerprint(task, method, settings)}{suffix}"


def write_json_atomic(path: str | Path, data: dict) -> None:
    """Write to a temporary file, flush it to disk, then rename: a crash leaves the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def corrupt(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"Checkpoint {path} is corrupt ({why}); it was not used. Delete it to start this run "
                           f"over, or pass another checkpoint path.")


def read_json_checkpoint(path: str | Path, required: set[str]) -> dict | None:
    """The saved state, None when there is none; CheckpointError when it is not valid JSON
    or lacks one of the ``required`` keys."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise corrupt(path, f"{type(err).__name__}: {err}") from err
    if not isinstance(state, dict):
        raise corrupt(path, "not a JSON object")
    missing = set(required) - set(state)
    if missing:
        raise corrupt(path, f"keys {sorted(missing)} are missing")
    return state
