"""JSON checkpoints for the text optimizers: written atomically, never used when corrupt."""

from __future__ import annotations

import json
import os
from pathlib import Path


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be trusted: unreadable, truncated, or from another configuration."""


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
