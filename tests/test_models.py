"""Models sized before anything loads (``models.memory_estimate``), and the plan's GPU memory table."""
import pytest
import transformers
import yaml

from promptgrad import models, plan
from promptgrad.checks import weights_note
from promptgrad.models import PUBLISHED_CONFIGS, memory_estimate
from promptgrad.runner import ROOT

# every checkpoint's parameters as the hub counts them; its model card rounds them to 0.49B, 1.54B, 3.09B,
# 7.61B, 14.7B, 1.54B and 6.74B
PARAMETERS = {"Qwen/Qwen2.5-0.5B-Instruct": 494_032_768, "Qwen/Qwen2.5-1.5B-Instruct": 1_543_714_304,
              "Qwen/Qwen2.5-3B-Instruct": 3_085_938_688, "Qwen/Qwen2.5-7B-Instruct": 7_615_616_512,
              "Qwen/Qwen2.5-14B-Instruct": 14_770_033_664, "Qwen/Qwen2.5-Math-1.5B": 1_543_714_304,
              "meta-llama/Llama-2-7b-chat-hf": 6_738_415_616}
LLAMA = "meta-llama/Llama-2-7b-chat-hf"


@pytest.fixture
def offline(monkeypatch):
    """No model's own config can load, even where a hub cache holds it."""
    def unreachable(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", unreachable)


def test_the_published_configs_give_each_model_cards_parameter_count(offline):
    assert set(PUBLISHED_CONFIGS) == set(PARAMETERS)
    for name, parameters in PARAMETERS.items():
        size = memory_estimate(name, "bfloat16")
        assert (size["parameters"], size["published"]) == (parameters, models.PUBLISHED_CONFIGS_DATE), name


def test_every_hub_model_of_the_paper_profile_has_a_published_config():
    profile = yaml.safe_load((ROOT / "notebooks" / "profiles" / "paper.yaml").read_text())
    specs = [spec for params in profile.values() for key, value in params.items()
             for spec in (value if key == "SCALE_MODELS" else [value] if key.endswith("MODEL") else [])]
    hub = {plan._gpu_model(spec) for spec in specs} - {None}
    assert hub == set(PUBLISHED_CONFIGS)


def test_a_models_own_config_comes_before_its_published_copy(tmp_path, monkeypatch):
    from promptgrad.dryrun import tiny_model

    folder = str(tiny_model(tmp_path / "tiny-qwen2"))
    monkeypatch.setitem(PUBLISHED_CONFIGS, folder, PUBLISHED_CONFIGS[LLAMA])
    own = memory_estimate(folder, "bfloat16")
    assert own["published"] is None and own["parameters"] < 10**7


def test_the_check_states_the_weights_of_a_paper_model_offline(offline):
    assert weights_note("Qwen/Qwen2.5-7B-Instruct").startswith(
        "7.62B parameters: 14.2 GiB of weights in bf16 (cuda), 28.4 GiB in fp32 (cpu), from its published config")


def test_the_memory_table_sizes_local_models_and_leaves_api_models_out(offline, data_dir):
    params = {"TASKS": ["gpo/bbh/navigate"], "MODEL": LLAMA, "LOOP_MODEL": LLAMA,
              "OPTIMIZER_MODEL": {"kind": "openai", "model": "gpt-3.5-turbo"}, "BATCH_SIZE": 32,
              "PROTOCOL": "forced", "MAX_TOKENS": 256, "FORCED_MAX_TOKENS": 100}
    notes = []
    [row] = plan.memory_table("02_gpo", params, notes)
    tokens = plan.longest_question("gpo/bbh/navigate") + plan.PROMPT_MARGIN + 256 + 100
    assert row["model"] == LLAMA and row["weights_gib"] == PARAMETERS[LLAMA] * 2 / 2**30
    assert row["eval_batch"] == f"32 x {tokens:,}"
    assert row["kv_cache_gib"] == 2 * 32 * 4096 * 2 * 32 * tokens / 2**30  # keys and values, 32 layers, bf16
    assert row["train_activations_gib"] is None and row["peak_gib"] == row["weights_gib"] + row["kv_cache_gib"]
    assert any("openai:gpt-3.5-turbo" in note and "left out" in note for note in notes)


def test_gradient_checkpointing_lowers_the_training_estimate(offline, data_dir):
    params = {"TASKS": ["bbh/causal_judgement"], "MODEL": "Qwen/Qwen2.5-0.5B-Instruct", "BATCH_SIZE": {"*": 8},
              "EVAL_BATCH_SIZE": 64, "SCALE_MODELS": [], "SCALE_TASKS": []}
    [full] = plan.memory_table("01_embedgrad", {**params, "GRADIENT_CHECKPOINTING": False}, [])
    [checkpointed] = plan.memory_table("01_embedgrad", {**params, "GRADIENT_CHECKPOINTING": True}, [])
    assert (full["checkpointing"], checkpointed["checkpointing"]) == ("no", "yes")
    assert 0 < checkpointed["train_activations_gib"] < full["train_activations_gib"] / 4
    assert full["train_batch"] == checkpointed["train_batch"] != "-"


def test_only_a_server_on_this_machine_counts_as_a_card_of_the_users():
    llama = "meta-llama/Llama-2-7b-chat-hf"
    assert plan._gpu_model({"kind": "openai", "model": llama, "base_url": "http://localhost:8000/v1"}) == llama
    assert plan._gpu_model({"kind": "openai", "model": llama, "base_url": "https://api.together.xyz/v1"}) is None
    assert plan._gpu_model({"kind": "openai", "model": "qwen2.5:7b", "base_url": "http://127.0.0.1:11434/v1"}) is None
    assert plan._gpu_model("openai:gpt-4o") is None and plan._gpu_model(llama) == llama
