"""promptgrad: EmbedGrad, GPO and GRAD-SUM reproduced and compared on one protocol."""

from __future__ import annotations

import os
import random

# The embedded model and the data are local; never wait on the hub for them.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from .cache import ResponseCache  # noqa: E402
from .engines import Engine, OpenAIEngine, TransformersEngine, Usage, make_engine  # noqa: E402
from .evaluation import (Evaluation, describe_rows, evaluate_prompt, rank_rows,  # noqa: E402
                         paired_difference, sample_records, wilson_interval)
from .methods import Engines, Found, record, score_on_test  # noqa: E402
from .models import EMBEDDED_MODEL, load_model  # noqa: E402
from .results import Results, notebook_parameters, read_metrics  # noqa: E402
from .embedgrad import EmbedGrad  # noqa: E402
from .gepa_search import GEPA  # noqa: E402
from .gpo import GPO  # noqa: E402
from .gradsum import GradSum  # noqa: E402
from . import methods, papers  # noqa: E402,F401
from .tasks import Example, Splits, Task, for_tasks, get_task, make_splits, per_task, task_splits  # noqa: E402

__all__ = ["EMBEDDED_MODEL", "EmbedGrad", "Engine", "Engines", "Evaluation", "Example", "Found", "GEPA", "GPO",
           "GradSum",
           "OpenAIEngine", "ResponseCache", "Results", "Splits", "Task", "TransformersEngine", "Usage",
           "describe_rows", "evaluate_prompt", "for_tasks", "get_task", "load_model",
           "make_engine", "make_splits", "notebook_parameters", "paired_difference", "per_task", "rank_rows",
           "read_metrics", "record", "sample_records", "score_on_test", "seed_everything", "task_splits",
           "wilson_interval"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
