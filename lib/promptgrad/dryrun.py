"""A dry run of a profile: its notebooks' code paths and settings, on stand-ins built here, offline.

    python -m promptgrad.runner --profile paper --dry-run        # -> runs/paper-dry/

Before renting a GPU or paying for an API, this runs every notebook of a profile end to end:

- every hub model becomes a tiny randomly initialized model of its architecture (Llama for
  ids that name it, Qwen2 otherwise; 2 layers, the embedded model's tokenizer and chat
  template), one per id, so a loop over model sizes still loads and frees each;
- every OpenAI model is answered by a real llama.cpp server on loopback serving the embedded
  model under that name (the notebooks' OpenAI-compatible engine and its client run as they
  would against the API);
- every size is cut by one number, ``rows``: split sizes and minibatches to ``rows`` (a
  whole split, ``None``, too), steps and iterations to 2, epochs to 1, candidates, beams and
  children to 2, answer and optimizer budgets to 64 tokens, GEPA's metric calls to 40;
  settings left ``None`` (each task's own steps, the default answer budget) stay ``None``;
- a task list keeps one task per benchmark (BBH, MMLU, GSM8K...), and a task whose
  data only the hub has is dropped, with a note.

It proves that the notebooks and the library run with the profile's settings, models and
engines; it says nothing of the numbers (random models answer at random).
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import torch

MODEL_NAMES = ("SCALE_MODELS",)  # besides every parameter named *MODEL
ROWS = ("N_TRAIN", "N_DEV", "N_TEST", "N_EXEMPLARS", "PROBE_N", "LOOP_DEV", "MINIBATCH", "minibatch")
STEPS = ("STEPS", "SWEEP_STEPS", "TEXT_STEPS", "ITERATIONS", "iterations")
CHOICES = ("CANDIDATES", "BEAM", "CHILDREN", "beam", "children")
CAPS = {"steps": 2, "EPOCHS": 1, "choices": 2, "tokens": 64, "max_metric_calls": 40}
FLOORS = {"BATCH": 64}  # GPO's batch: its step rule (epochs x ceil(train / batch)) still runs, with 1-2 steps a task


def tiny_model(folder: Path, architecture: str = "qwen2", generation: dict | None = None, seed: int = 0) -> Path:
    """A 2-layer model of ``architecture`` in ``folder`` (made once); ``generation`` sets fields of
    its generation_config, as a hub model's ``generation_config.json`` does."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from .models import EMBEDDED_MODEL, local_model_path

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(local_model_path(EMBEDDED_MODEL))
    config_class, model_class = {"llama": (LlamaConfig, LlamaForCausalLM),
                                 "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[architecture]
    config = config_class(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                          tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = model_class(config)
    for key, value in (generation or {}).items():
        setattr(model.generation_config, key, value)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """A real llama.cpp OpenAI-compatible server (``python -m llama_cpp.server``) on the embedded
    GGUF, in a subprocess on loopback. ``start()`` returns once ``/v1/models`` answers; ``kill()``
    is a crash (SIGKILL); ``start()`` again restarts on the same port. As a context manager it
    always stops."""

    def __init__(self, log_path: Path, port: int | None = None, n_ctx: int = 2048, threads: int = 1):
        self.log_path = Path(log_path)
        self.port = port or free_port()
        self.n_ctx, self.threads = n_ctx, threads
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120.0) -> "LlamaServer":
        from .models import embedded_gguf_path

        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf_path()),
                   "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
                   "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2):
                    return self
            except OSError:
                time.sleep(0.2)
        exit_code = self.process.poll()
        self.stop()
        state = f"exited with code {exit_code}" if exit_code is not None else f"did not answer within {timeout:.0f}s"
        raise RuntimeError(f"llama.cpp server on port {self.port} {state}: {' '.join(command)}\n"
                           f"Its output ({self.log_path}):\n{self.log_path.read_text(errors='replace')[-4000:]}")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _is_hub_id(name) -> bool:
    from .models import EMBEDDED_MODEL

    return isinstance(name, str) and name != EMBEDDED_MODEL and not name.startswith("openai:") \
        and not Path(name).expanduser().exists()


def stand_in_model(spec, folder: Path, server_url: str):
    """``spec`` with a hub model replaced by a tiny local one and an OpenAI model by the server."""
    if isinstance(spec, list):
        return [stand_in_model(s, folder, server_url) for s in spec]
    if isinstance(spec, str) and spec.startswith("openai:"):
        return {"kind": "openai", "model": spec[len("openai:"):], "base_url": server_url}
    if isinstance(spec, dict):
        kind = spec.get("kind", "transformers")
        if kind == "openai":  # the API, or a server of the user's (vLLM): the loopback server answers as it
            return {**spec, "base_url": server_url}
        if kind == "transformers" and _is_hub_id(spec.get("model")):
            return {**spec, "model": stand_in_model(spec["model"], folder, server_url)}
        return spec
    if _is_hub_id(spec):
        architecture = "llama" if "llama" in spec.lower() else "qwen2"
        seed = int(hashlib.sha256(spec.encode()).hexdigest()[:8], 16)  # a different random model per id
        return str(tiny_model(folder / spec.replace("/", "--"), architecture, seed=seed))
    return spec


def _cap(value, cap: int, none_too: bool = False):
    if isinstance(value, dict):
        return {k: _cap(v, cap, none_too) for k, v in value.items()}
    if value is None:
        return cap if none_too else None
    return min(value, cap) if isinstance(value, int) and not isinstance(value, bool) else value


def _per_task(value: dict) -> bool:
    from .tasks import TASKS

    return all(key == "*" or key in TASKS for key in value)


def scaled(name: str, value, rows: int):
    """One parameter (or a key of a settings dict such as ``GEPA``) with its size cut for a dry run."""
    if isinstance(value, dict) and not _per_task(value):
        return {k: scaled(k, v, rows) for k, v in value.items()}
    if name in ROWS:
        return _cap(value, rows, none_too=True)
    if name in STEPS:
        return _cap(value, CAPS["steps"])
    if name in CHOICES:
        return _cap(value, CAPS["choices"])
    if name.upper().endswith("MAX_TOKENS"):
        return _cap(value, CAPS["tokens"])
    if name in FLOORS and isinstance(value, int):
        return max(value, FLOORS[name])
    return _cap(value, CAPS[name]) if name in CAPS else value


def one_per_benchmark(names: list[str]) -> tuple[list[str], list[str]]:
    """(kept, notes): the first task of each benchmark whose data is here offline."""
    from .papers import benchmark_of
    from .tasks import DataNotFoundError, get_task

    kept, families, notes = [], set(), []
    for name in names:
        family = benchmark_of(name)
        if family in families:
            continue
        try:
            get_task(name).pools()
        except DataNotFoundError:
            notes.append(f"{name}: dropped, its data is on the Hugging Face hub only")
            continue
        families.add(family)
        kept.append(name)
    return kept, notes


def dry_parameters(params: dict, folder: Path, server_url: str, rows: int = 4) -> tuple[dict, list[str]]:
    """A notebook's resolved parameters for a dry run, and notes on what was dropped."""
    out, notes = {}, []
    tasks = params.get("TASKS")
    if tasks:
        kept, notes = one_per_benchmark(tasks)
    for name, value in params.items():
        if name.endswith("MODEL") or name in MODEL_NAMES:
            value = stand_in_model(value, folder, server_url)
        elif tasks and isinstance(value, list) and value and all(v in tasks for v in value):
            value = [v for v in value if v in kept]  # TASKS, HYBRID_TASKS...
        elif tasks and isinstance(value, dict) and value and all(k in tasks or k == "*" for k in value):
            value = {k: v for k, v in value.items() if k in kept or k == "*"}
        out[name] = scaled(name, value, rows)
    return out, notes
