import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROMPTGRAD_DATA_DIR", str(ROOT.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ["PROMPTGRAD_DATA_DIR"])
    if not (path / "gsm8k").is_dir():
        pytest.fail(f"PROMPTGRAD_DATA_DIR={path} does not hold the offline benchmark data (../shared/data).")
    return path


@pytest.fixture(scope="session")
def local_engine():
    """The embedded model, no cache: batch 4 keeps test runs small."""
    from promptgrad import TransformersEngine

    return TransformersEngine(batch_size=4, system_prompt="You are a helpful assistant.")
