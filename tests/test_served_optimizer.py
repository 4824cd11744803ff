"""Every text method for one step with its optimizer (GPO, OPRO, APE) or its judge, critic and
editor (GRAD-SUM and its ablation) served by a real llama.cpp server on loopback, as a user points
them at any OpenAI-compatible endpoint. The task model is scripted, so the test stays short."""

import pytest

from promptgrad.dryrun import LlamaServer
from promptgrad import gpo, gradsum
from promptgrad.engines import OpenAIEngine
from promptgrad.models import EMBEDDED_MODEL
from promptgrad.tasks import Example, get_task

from fakes import ScriptedEngine

TASK = get_task("bbh/navigate")
EXAMPLES = [Example(f"If you follow these instructions, do you return to the starting point? Take {n} steps. "
                    f"Turn around. Take {m} steps.\nOptions:\n- Yes\n- No", "yes" if n == m else "no", id=str(i))
            for i, (n, m) in enumerate([(1, 1), (2, 3), (4, 4), (5, 2), (3, 3), (6, 1)])]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with LlamaServer(tmp_path_factory.mktemp("llama_server") / "server.log") as server:
        yield OpenAIEngine(EMBEDDED_MODEL, base_url=server.url)


def task_model():
    return ScriptedEngine(lambda conversation, i: "Yes.")


@pytest.mark.parametrize("strategy", ["GPO", "OPRO", "APE"])
def test_gpo_strategies_take_a_step_with_a_served_optimizer(served, strategy):
    before = served.usage.model_calls
    run = gpo.optimize(TASK, task_model(), served, EXAMPLES[:3], EXAMPLES[3:], strategy=strategy, steps=1,
                       candidates=2, optimizer_max_tokens=32, parse="lenient")
    assert len(run.steps) == 1 and run.steps[0]["samples"] == 2
    assert served.usage.model_calls - before == 2  # both samples came from the server
    assert all(isinstance(output, str) for output in run.steps[0]["outputs"])


@pytest.mark.parametrize("summarize", [True, False])
def test_gradsum_takes_an_iteration_with_a_served_critic_and_editor(served, summarize):
    """Exact match judges the scripted answers ("yes" to everything fails the "no" questions), so
    the served model writes critiques, their summary (GRAD-SUM) and the edited prompts."""
    run = gradsum.optimize(TASK, EXAMPLES[:4], EXAMPLES[4:], initial_prompt="{question}\nLet's think step by step.",
                           generator=task_model(), judge=gradsum.EXACT_JUDGE, gradient_engine=served,
                           summarizer=served, editor=served, beam=2, children=2, iterations=1, minibatch=4,
                           summarize=summarize, gradient_max_tokens=24, summary_max_tokens=24, editor_max_tokens=32,
                           max_failures=1, parse="lenient")
    assert len(run.beam_scores()) == 2  # the start and one iteration
    assert run.usage["gradient"].model_calls >= 1 and run.usage["editor"].model_calls >= 1
    assert (run.usage["summary"].model_calls >= 1) == summarize


def test_gradsum_judge_served(served):
    verdicts = gradsum.judge_outputs(served, TASK, EXAMPLES[:2], ["Yes.", "No."], max_tokens=24)
    assert len(verdicts) == 2 and all(v.score in (0, 1, None) for v in verdicts)
