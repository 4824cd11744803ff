"""The paper profile's GPU paths, on tiny Qwen2/Llama stand-ins: bf16 on cuda by default, a model's
memory freed when released, EmbedGrad and PEFT training with and without gradient checkpointing,
text and soft prompts decoded alike. Skipped without a GPU (CI has none); run where one is:

    PROMPTGRAD_STAND_INS=<folder of tiny models> python -m pytest -q tests/test_cuda.py

``PROMPTGRAD_STAND_INS`` holds ``tiny-qwen2`` and ``tiny-llama`` as ``dryrun.tiny_model`` writes
them (they need the embedded model's tokenizer, so a GPU machine without it gets them copied).
"""

import os
from pathlib import Path

import pytest
import torch

from promptgrad import TransformersEngine, evaluate_prompt, get_task, make_splits
from promptgrad.dryrun import tiny_model
from promptgrad.embedgrad import SoftPrompt, TrainConfig, train_peft_prompt_tuning, train_soft_prompt
from promptgrad.tasks import Example

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
INIT = "please reason step by step"


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def stand_in(request, tmp_path_factory):
    folder = Path(os.environ.get("PROMPTGRAD_STAND_INS", tmp_path_factory.mktemp("stand-ins")))
    return str(tiny_model(folder / f"tiny-{request.param}", request.param))


def test_a_model_loads_in_bf16_on_cuda_and_its_memory_is_freed(stand_in):
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    engine = TransformersEngine(stand_in)
    assert engine.hf_model.device.type == "cuda" and engine.hf_model.dtype == torch.bfloat16
    assert torch.cuda.memory_allocated() > before
    engine.release()
    assert torch.cuda.memory_allocated() == before


def test_text_and_untrained_soft_prompt_answer_alike_on_cuda(stand_in):
    """The check of notebook 01 on the GPU: the soft prompt at its start is the text prompt. The
    text path runs the fast decoder, the soft path ``generate``; in bf16 their sums may round
    apart, so the agreement is printed and must be most of the rows."""
    engine = TransformersEngine(stand_in, batch_size=8)
    task = get_task("sst2")
    examples = [Example(f"Review: {t}\nIs this review positive or negative?", "positive", id=str(i))
                for i, t in enumerate(["great fun", "a dull film", "fine", "I loved it", "bad", "a delight",
                                       "not for me", "two hours of my life"])]
    as_text = evaluate_prompt(engine, task, INIT, examples, max_tokens=12)
    as_soft = evaluate_prompt(engine, task, SoftPrompt(INIT, engine.tokenizer, engine.hf_model), examples,
                              max_tokens=12)
    same = sum(a["output"] == b["output"] for a, b in zip(as_text.records, as_soft.records))
    print(f"{stand_in}: identical outputs on {same}/{len(examples)}")
    assert same >= len(examples) * 3 // 4
    engine.release()


@pytest.mark.parametrize("peft", [False, True])
def test_training_on_cuda_with_and_without_gradient_checkpointing(stand_in, data_dir, peft):
    engine = TransformersEngine(stand_in)
    task, splits = get_task("sst2"), make_splits("sst2", 8, 0, 1, seed=0)
    cfg = TrainConfig(steps=3, batch_size=4, lr=0.05)
    runs = []
    for on in (False, True):
        torch.cuda.reset_peak_memory_stats()
        if peft:
            soft, log = train_peft_prompt_tuning(INIT, engine, task, splits.train, cfg, stand_in,
                                                 gradient_checkpointing=on)
        else:
            soft = SoftPrompt(INIT, engine.tokenizer, engine.hf_model)
            log = train_soft_prompt(soft, engine, task, splits.train, cfg, one_pass=True, gradient_checkpointing=on)
        runs.append(log.losses)
        print(f"{stand_in} peft={peft} checkpointing={on}: losses {[round(x, 4) for x in log.losses]}, "
              f"peak {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB")
        assert soft.embeddings.device.type == "cuda" and all(map(torch.isfinite, map(torch.tensor, log.losses)))
    assert runs[0] == pytest.approx(runs[1], rel=2e-2)  # bf16: the same training, rounded apart
    engine.release()
