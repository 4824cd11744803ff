"""Tiny randomly initialized models of the papers' architectures, built offline.

They share the embedded SmolLM2 tokenizer (and its chat template) and are saved as ordinary
transformers folders, so every code path that loads a hub model by name runs on them.
"""

from pathlib import Path

import torch

ARCHITECTURES = ("llama", "qwen2")


def tiny_model(folder: Path, architecture: str = "qwen2", generation: dict | None = None, seed: int = 0) -> Path:
    """A 2-layer model of ``architecture`` in ``folder`` (made once); ``generation`` sets fields of
    its generation_config, as a hub model's ``generation_config.json`` does."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from promptgrad.models import EMBEDDED_MODEL, local_model_path

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
