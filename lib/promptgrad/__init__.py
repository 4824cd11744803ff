"""promptgrad: EmbedGrad, GPO and GRAD-SUM reproduced and compared on one protocol."""

from __future__ import annotations

import os
import random

# The embedded model and the data are local; never wait on the hub for them.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from .cache import ResponseCache  # noqa: E402
from .engines import Engine, OpenAIEngine, TransformersEngine, Usage, make_engine  # noqa: E402
from .evaluation import (Evaluation, describe_rows, evaluate_prompt, evaluate_prompts, rank_rows,  # noqa: E402
                         paired_difference, sample_records, wilson_interval)
from .models import EMBEDDED_MODEL, load_model  # noqa: E402
from .results import Results, read_metrics  # noqa: E402
from .tasks import Example, Splits, Task, for_tasks, get_task, make_splits, per_task, task_splits  # noqa: E402

__all__ = ["EMBEDDED_MODEL", "Engine", "Evaluation", "Example", "OpenAIEngine", "ResponseCache", "Results",
           "Splits", "Task", "TransformersEngine", "Usage", "describe_rows", "evaluate_prompt",
           "evaluate_prompts", "for_tasks", "get_task", "per_task", "task_splits", "rank_rows", "load_model", "make_engine", "make_splits", "paired_difference",
           "read_metrics", "sample_records", "seed_everything", "wilson_interval"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
