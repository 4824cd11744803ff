import dataclasses
import hashlib

import pytest
import torch

from promptgrad import evaluate_prompt, get_task, make_splits
from promptgrad.checkpoints import CheckpointError
from promptgrad.embedgrad import (KEEP_TOKENS, SoftPrompt, TrainConfig, target_loss, token_radii, train_soft_prompt,
                                  training_target)
from promptgrad.models import local_model_path

INIT = "please reason step by step"


@pytest.fixture(scope="module")
def sst2(data_dir):
    return get_task("sst2"), make_splits("sst2", 8, 0, 4, seed=0)


def _weights_hash(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def _soft(engine, placement="after"):
    return SoftPrompt(INIT, engine.tokenizer, engine.hf_model, placement, engine.model)


def test_soft_prompt_at_start_equals_the_text_prompt(local_engine, sst2):
    task, splits = sst2
    soft = _soft(local_engine)
    assert soft.k == len(local_engine.tokenizer(INIT, add_special_tokens=False).input_ids)
    text_out = evaluate_prompt(local_engine, task, INIT, splits.test, max_tokens=10).records
    soft_out = evaluate_prompt(local_engine, task, soft, splits.test, max_tokens=10).records
    assert [r["output"] for r in text_out] == [r["output"] for r in soft_out]
    # and the same next-token distribution, not only the same argmax
    text = local_engine.render([{"role": "user", "content": task.format(splits.test[0], INIT)}])
    ids = local_engine.tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    spliced = local_engine.render([{"role": "user", "content": task.format(splits.test[0], soft.slot_text())}])
    with torch.no_grad():
        a = local_engine.hf_model(input_ids=ids).logits[0, -1]
        b = local_engine.hf_model(**soft.build_inputs([spliced], local_engine.tokenizer, local_engine.hf_model)
                                  ).logits[0, -1]
    assert torch.allclose(a, b, atol=1e-4)


def test_training_moves_only_the_prompt_and_lowers_the_loss(local_engine, sst2):
    task, splits = sst2
    before = _weights_hash(local_engine.hf_model)
    soft = _soft(local_engine)
    log = train_soft_prompt(soft, local_engine, task, splits.train, TrainConfig(steps=6, batch_size=4, lr=3e-2))
    assert _weights_hash(local_engine.hf_model) == before
    assert not any(p.requires_grad for p in local_engine.hf_model.parameters())
    assert not torch.equal(soft.embeddings.detach(), soft.start)
    assert min(log.losses[-2:]) < log.losses[0]


def test_trust_region_and_l2_penalty_limit_drift(local_engine, sst2):
    task, splits = sst2
    free, ball, pulled = _soft(local_engine), _soft(local_engine), _soft(local_engine)
    cfg = TrainConfig(steps=3, batch_size=4, lr=0.1)
    train_soft_prompt(free, local_engine, task, splits.train, cfg)
    train_soft_prompt(ball, local_engine, task, splits.train, TrainConfig(steps=3, batch_size=4, lr=0.1,
                                                                           trust_radius=0.05))
    train_soft_prompt(pulled, local_engine, task, splits.train, TrainConfig(steps=3, batch_size=4, lr=0.1,
                                                                             l2_penalty=100.0))
    dist = {name: (s.embeddings.detach() - s.start).norm(dim=-1) for name, s in
            (("free", free), ("ball", ball), ("pulled", pulled))}
    assert dist["free"].max() > 0.05
    assert dist["ball"].max() <= 0.05 + 1e-5
    assert dist["pulled"].sum() < dist["free"].sum()


def test_save_and_load_give_identical_outputs(local_engine, sst2, tmp_path):
    task, splits = sst2
    soft = _soft(local_engine, "before")
    train_soft_prompt(soft, local_engine, task, splits.train, TrainConfig(steps=1, batch_size=4, lr=0.05))
    soft.save(tmp_path / "p", lr=0.05)
    again = SoftPrompt.load(tmp_path / "p", local_engine.tokenizer, local_engine.hf_model)
    assert again.placement == "before" and again.fingerprint() == soft.fingerprint()
    assert [r["output"] for r in evaluate_prompt(local_engine, task, soft, splits.test, max_tokens=8).records] == \
        [r["output"] for r in evaluate_prompt(local_engine, task, again, splits.test, max_tokens=8).records]


def test_peft_export_round_trip(local_engine, sst2, tmp_path):
    from peft import PeftModel

    task, splits = sst2
    soft = _soft(local_engine, "prefix")
    with torch.no_grad():
        soft.embeddings.add_(0.01 * torch.randn_like(soft.embeddings))
    before = _weights_hash(local_engine.hf_model)
    soft.export_peft(tmp_path / "adapter", local_engine.hf_model, local_model_path(local_engine.model))
    assert _weights_hash(local_engine.hf_model) == before
    text = local_engine.render([{"role": "user", "content": task.format(splits.test[0], soft.slot_text())}])
    ids = local_engine.tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        ours = local_engine.hf_model(**soft.build_inputs([text], local_engine.tokenizer, local_engine.hf_model)
                                     ).logits[0, -1]
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(local_model_path(local_engine.model))
    peft_model = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        theirs = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1]
    assert torch.allclose(ours, theirs, atol=1e-4)
    with pytest.raises(ValueError, match="always prepends"):
        _soft(local_engine, "after").export_peft(tmp_path / "x", local_engine.hf_model, "x")


def test_checkpoint_resume_matches_an_uninterrupted_run(local_engine, sst2, tmp_path):
    task, splits = sst2
    cfg = TrainConfig(steps=4, batch_size=2, lr=0.05, seed=3)
    whole = _soft(local_engine)
    train_soft_prompt(whole, local_engine, task, splits.train, cfg)
    interrupted = _soft(local_engine)
    path = tmp_path / "run.pt"
    train_soft_prompt(interrupted, local_engine, task, splits.train, cfg, checkpoint=path, checkpoint_every=1,
                      stop_after=2)
    resumed = _soft(local_engine)
    log = train_soft_prompt(resumed, local_engine, task, splits.train, cfg, checkpoint=path, checkpoint_every=1)
    assert log.resumed_from == 2 and len(log.losses) == 4
    assert torch.allclose(resumed.embeddings, whole.embeddings, atol=1e-6)
    (tmp_path / "other.pt").write_bytes(path.read_bytes())  # a state written by these settings...
    with pytest.raises(CheckpointError, match="other settings"):  # ...is not resumed by others
        train_soft_prompt(_soft(local_engine), local_engine, task, splits.train, dataclasses.replace(cfg, lr=0.01),
                          checkpoint=tmp_path / "other.pt", stop_after=1)
    path.write_bytes(b"not a checkpoint")  # corrupt: an error that says so, never used
    with pytest.raises(CheckpointError, match="is corrupt"):
        train_soft_prompt(_soft(local_engine), local_engine, task, splits.train, cfg, checkpoint=path, stop_after=1)


def test_a_finished_run_resumed_reports_the_time_it_took(local_engine, sst2, tmp_path):
    task, splits = sst2
    cfg = TrainConfig(steps=2, batch_size=2, lr=0.05)
    path = tmp_path / "run.pt"
    first = train_soft_prompt(_soft(local_engine), local_engine, task, splits.train, cfg, checkpoint=path)
    again = train_soft_prompt(_soft(local_engine), local_engine, task, splits.train, cfg, checkpoint=path)
    assert again.resumed_from == 2 and again.losses == first.losses
    assert again.seconds == pytest.approx(first.seconds, rel=0.05) and again.seconds_per_step > 0


@pytest.mark.parametrize("checkpoints", [False, True])
def test_the_budget_counts_the_learning_rate_sweep(local_engine, data_dir, tmp_path, checkpoints):
    """Two rates tried for one step each, then two steps at the better one: four training steps, or
    three where the final run continues the sweep's checkpoint; the sweep's dev answers counted."""
    from promptgrad import EmbedGrad, Engines

    task, splits = get_task("sst2"), make_splits("sst2", 4, 3, 1, seed=0)
    method = EmbedGrad(steps=2, batch_size=2, learning_rates=[0.01, 0.05], sweep_steps=1, max_tokens=2)
    before = local_engine.usage.model_calls
    found = method.optimize(task, splits, Engines(task=local_engine), tmp_path if checkpoints else None)
    assert found.budget.train_examples == (3 if checkpoints else 4) * 2
    assert found.budget.model_calls + found.budget.cache_hits == 2 * 3 == local_engine.usage.model_calls - before
    assert found.budget.wall_seconds >= found.run.log.seconds > 0


@pytest.mark.parametrize("peft", [False, True])
def test_gradient_checkpointing_trains_the_same_prompt(data_dir, tmp_path, monkeypatch, peft):
    """A large model trains with its activations recomputed in the backward pass: the same losses
    and vectors as without, and the model as it was after (eval mode, no checkpointing)."""
    from promptgrad import TransformersEngine
    from promptgrad.dryrun import tiny_model
    from promptgrad.embedgrad import train_peft_prompt_tuning

    folder = tiny_model(tmp_path / "tiny-qwen2", "qwen2")
    engine = TransformersEngine(str(folder))
    task, splits = get_task("sst2"), make_splits("sst2", 6, 0, 1, seed=0)
    cfg = TrainConfig(steps=3, batch_size=3, lr=0.05)
    runs, calls = [], []
    mlp = type(engine.hf_model.model.layers[0].mlp)  # counted by class: hooks do not see the recompute
    monkeypatch.setattr(mlp, "forward", lambda self, x, forward=mlp.forward: calls.append(1) or forward(self, x))
    for on in (False, True):
        calls.clear()
        if peft:
            soft, log = train_peft_prompt_tuning(INIT, engine, task, splits.train, cfg, str(folder),
                                                 gradient_checkpointing=on)
        else:
            soft = _soft(engine)
            log = train_soft_prompt(soft, engine, task, splits.train, cfg, one_pass=True, gradient_checkpointing=on)
        runs.append((soft.embeddings.detach().clone(), log.losses))
        assert len(calls) == 2 * cfg.steps * (2 if on else 1)  # 2 layers; checkpointed, each runs again
        assert not engine.hf_model.is_activation_checkpointing
        assert not any(m.training for m in engine.hf_model.modules())
    assert runs[0][1] == pytest.approx(runs[1][1], abs=1e-6)
    assert torch.allclose(runs[0][0], runs[1][0], atol=1e-6)


def test_keep_tokens_holds_each_vector_nearest_to_its_own_token(local_engine, sst2):
    task, splits = sst2
    vocab = local_engine.hf_model.get_input_embeddings().weight.float()

    def nearest(soft):
        return torch.cdist(soft.embeddings.detach(), vocab).argmin(-1).tolist()

    free, kept = _soft(local_engine), _soft(local_engine)
    radii = token_radii(kept, local_engine.hf_model)
    for i, own in enumerate(kept.init_ids):  # just under half the way to the nearest other token
        others = (vocab - kept.start[i]).norm(dim=-1)
        others[own] = float("inf")
        assert torch.isclose(radii[i, 0], 0.49 * others.min(), rtol=1e-5)
    for soft, radius in ((free, None), (kept, KEEP_TOKENS)):
        train_soft_prompt(soft, local_engine, task, splits.train, TrainConfig(steps=3, batch_size=4, lr=1.0,
                                                                              trust_radius=radius))
    assert nearest(free) != free.init_ids  # this rate moves tokens away from their own
    assert nearest(kept) == kept.init_ids
    moved = (kept.embeddings.detach() - kept.start).norm(dim=-1)
    assert (moved > 0).all() and (moved <= radii[:, 0] + 1e-5).all()
    with pytest.raises(ValueError, match="trust_radius"):
        TrainConfig(trust_radius="keep")


def test_targets_and_bad_parameters(data_dir, local_engine):
    gsm = get_task("gsm8k")
    example = gsm.pools()["test"][0]
    assert training_target(gsm, example).endswith("#### 18") and "<<" not in training_target(gsm, example)
    assert training_target(gsm, example, "answer") == "The answer is 18."
    with pytest.raises(ValueError, match="placement"):
        _soft(local_engine, "middle")
    with pytest.raises(ValueError, match="lr must be positive"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="at least 1"):
        TrainConfig(steps=0)


def test_target_loss_counts_only_target_tokens(local_engine, sst2):
    task, splits = sst2
    soft = _soft(local_engine)
    texts = [local_engine.render([{"role": "user", "content": task.format(e, soft.slot_text())}])
             for e in splits.train[:2]]
    tok = local_engine.tokenizer
    targets = [tok("positive", add_special_tokens=False).input_ids + [tok.eos_token_id],
               tok("negative", add_special_tokens=False).input_ids + [tok.eos_token_id]]
    inputs = soft.build_inputs(texts, tok, local_engine.hf_model, targets)
    assert int((inputs["labels"] != -100).sum()) == sum(map(len, targets))
    with torch.no_grad():
        full = local_engine.hf_model(**inputs).loss  # transformers' own loss over all positions
        ours = target_loss(local_engine.hf_model, inputs)
    assert torch.allclose(full, ours, atol=1e-5)


def test_peft_baseline_resumes_from_its_checkpoint(local_engine, sst2, tmp_path):
    from promptgrad.embedgrad import train_peft_prompt_tuning

    task, splits = sst2
    cfg = TrainConfig(steps=3, batch_size=2, lr=0.05, seed=1)
    base = local_model_path(local_engine.model)
    before = _weights_hash(local_engine.hf_model)
    whole, _ = train_peft_prompt_tuning(INIT, local_engine, task, splits.train, cfg, base)
    train_peft_prompt_tuning(INIT, local_engine, task, splits.train, cfg, base, checkpoint=tmp_path / "p.pt",
                             checkpoint_every=1, stop_after=1)
    resumed, log = train_peft_prompt_tuning(INIT, local_engine, task, splits.train, cfg, base,
                                            checkpoint=tmp_path / "p.pt")
    assert log.resumed_from == 1 and len(log.losses) == 3
    assert torch.allclose(resumed.embeddings, whole.embeddings, atol=1e-6)
    assert resumed.placement == "prefix" and _weights_hash(local_engine.hf_model) == before


@pytest.mark.parametrize("placement", ["after", "before"])  # "prefix" has nothing before the prompt: one pass
def test_the_split_loss_is_the_one_pass_loss_with_its_gradient(local_engine, sst2, placement):
    """soft_prompt_loss reads the part before the prompt without gradients; loss and gradient are
    those of one pass over the whole rows (target_loss), up to the order of float sums."""
    from promptgrad.embedgrad import encode_examples, soft_prompt_loss

    task, splits = sst2
    soft = _soft(local_engine, placement)
    with torch.no_grad():
        soft.embeddings.add_(0.01 * torch.randn_like(soft.embeddings))  # not at the start
    texts, targets = encode_examples(local_engine, task, soft.slot_text(), splits.train[:4], placement,
                                     TrainConfig())
    found = {}
    for name, loss_of in (("one pass", lambda: target_loss(local_engine.hf_model, soft.build_inputs(
            texts, local_engine.tokenizer, local_engine.hf_model, targets))),
                          ("split", lambda: soft_prompt_loss(soft, texts, targets, local_engine.tokenizer,
                                                             local_engine.hf_model))):
        soft.embeddings.grad = None
        loss = loss_of()
        loss.backward()
        found[name] = (loss.detach(), soft.embeddings.grad.clone())
    assert torch.allclose(found["one pass"][0], found["split"][0], rtol=1e-4)
    one, split = found["one pass"][1], found["split"][1]
    assert (one - split).norm() / one.norm() < 1e-4  # measured: 2e-6 to 4e-6


def test_peft_loss_on_label_positions_only_is_peft_loss(local_engine, sst2):
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    from promptgrad.embedgrad import peft_target_loss

    model, tok = local_engine.hf_model, local_engine.tokenizer
    config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=5,
                                prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=INIT,
                                tokenizer_name_or_path=local_model_path(local_engine.model))
    peft_model = get_peft_model(model, config)
    try:
        rows = [tok("Review: great.\nSentiment:", add_special_tokens=False).input_ids,
                tok("Review: a long and dull film.\nSentiment:", add_special_tokens=False).input_ids]
        targets = [tok(" positive", add_special_tokens=False).input_ids, tok(" negative", add_special_tokens=False).input_ids]
        length = max(len(r) + len(t) for r, t in zip(rows, targets))
        ids = torch.full((2, length), tok.pad_token_id)
        mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
        for i, (r, t) in enumerate(zip(rows, targets)):
            ids[i, :len(r) + len(t)] = torch.tensor(r + t)
            mask[i, :len(r) + len(t)] = 1
            labels[i, len(r):len(r) + len(t)] = torch.tensor(t)
        ours = peft_target_loss(peft_model, model, ids, mask, labels)
        theirs = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
        assert torch.allclose(ours, theirs, rtol=1e-5)
    finally:
        peft_model.unload() if hasattr(peft_model, "unload") else None  # prompt tuning wraps, changes nothing


def test_peft_training_is_reproducible(local_engine, sst2):
    from promptgrad.embedgrad import train_peft_prompt_tuning

    task, splits = sst2
    config = TrainConfig(steps=2, batch_size=4, lr=1e-2, seed=0)
    first, _ = train_peft_prompt_tuning(INIT, local_engine, task, splits.train, config,
                                        local_model_path(local_engine.model))
    second, _ = train_peft_prompt_tuning(INIT, local_engine, task, splits.train, config,
                                         local_model_path(local_engine.model))
    assert torch.equal(first.embeddings, second.embeddings)


def test_the_plan_counts_each_further_training_seed(data_dir):
    """01's TRAIN_SEEDS: each seed besides SEED trains EmbedGrad and PEFT again and scores both."""
    from promptgrad import plan

    params = {"TASKS": ["sst2"], "N_TRAIN": 20, "N_DEV": 4, "N_TEST": 10, "STEPS": 3, "BATCH_SIZE": 2,
              "LEARNING_RATES": [0.01], "SWEEP_STEPS": 1, "MAX_TOKENS": None, "SEED": 0, "SCALE_TASKS": ["sst2"],
              "SCALE_MODELS": []}
    one = plan.notebook_demand("01_embedgrad", {**params, "TRAIN_SEEDS": {}}, [])["task"]["sst2"]
    three = plan.notebook_demand("01_embedgrad", {**params, "TRAIN_SEEDS": {"sst2": [0, 1, 2]}}, [])["task"]["sst2"]
    assert one.train_examples == 2 * 3 * 2  # EmbedGrad and PEFT, 3 steps of 2 examples each
    assert three.train_examples == 3 * one.train_examples
    assert three.calls == one.calls + 2 * 2 * 10  # two more seeds, two prompts each, on the 10 test rows
