"""GPO: schedule, retrieval, parsing, selection, the loop, checkpoints and resumption.

Rules are checked with scripted engines (deterministic optimizer outputs and dev scores);
one complete small optimization, and one kill-and-resume, run on the embedded model.
"""

import json
import re

import pandas as pd
import pytest

from promptgrad import gpo, papers
from promptgrad.engines import Engine
from promptgrad.tasks import Example, get_task

TASK = get_task("gpo/bbh/navigate")


# ---------------------------------------------------------------- scripted engines


class ScriptedOptimizer(Engine):
    """Returns the next scripted list of outputs for each request (cycled if short)."""

    kind = "scripted-optimizer"

    def __init__(self, script: list[list[str]]):
        super().__init__("scripted-optimizer")
        self.script = script
        self.requests: list[str] = []

    def _generate(self, conversations, *, n, temperature, max_tokens, seed, soft_prompt, desc):
        out = []
        for conv in conversations:
            self.requests.append(conv[-1]["content"])
            texts = self.script[min(len(self.requests) - 1, len(self.script) - 1)]
            out.append([texts[i % len(texts)] for i in range(n)])
        return out


class ScriptedTaskModel(Engine):
    """Answers dev items correctly for the share ``quality[prompt]`` of them (by item index).
    Inputs look like ``item 3 gold yes``; the forced second turn repeats the first answer."""

    kind = "scripted-task"

    def __init__(self, quality: dict[str, float], default: float = 0.0):
        super().__init__("scripted-task")
        self.quality, self.default = quality, default

    def _generate(self, conversations, *, n, temperature, max_tokens, seed, soft_prompt, desc):
        out = []
        for conv in conversations:
            if len(conv) > 1:  # the answer-format turn
                out.append([conv[-2]["content"]] * n)
                continue
            question, _, prompt = conv[0]["content"].partition("\n")
            i, gold = re.match(r"item (\d+) gold (\w+)", question).groups()
            right = int(i) < round(self.quality.get(prompt, self.default) * N_DEV)
            answer = gold if right else ("no" if gold == "yes" else "yes")
            out.append([answer.capitalize()] * n)
        return out


N_DEV = 10
DEV = [Example(f"item {i} gold {'yes' if i % 2 else 'no'}", "yes" if i % 2 else "no", id=f"d{i}") for i in range(N_DEV)]
EXEMPLARS = [Example(f"exemplar {i}?", "yes", id=f"t{i}") for i in range(3)]


def wrap(*prompts):
    return [f"Sure. <START>{p}<END>" for p in prompts]


# ---------------------------------------------------------------- schedule and edit distance


def test_cosine_schedule_matches_gpo():
    values = gpo.edit_schedule(18, "cosine")
    assert values[0] == 49 and values[-1] == 10
    assert values == sorted(values, reverse=True)
    assert gpo.edit_schedule(3, "cosine") == [40, 20, 10]
    assert gpo.edit_limit(1, 18) == int(10 + 40 * 0.5 * (1 + __import__("math").cos(__import__("math").pi / 18)))


def test_linear_and_no_schedule():
    assert gpo.edit_schedule(4, "linear") == [40, 30, 20, 10]
    assert gpo.edit_schedule(3, "none") == [None, None, None]
    with pytest.raises(ValueError, match="schedule"):
        gpo.edit_limit(1, 3, "exponential")
    with pytest.raises(ValueError, match="1..3"):
        gpo.edit_limit(0, 3)


def test_steps_for_bbh_is_18():
    assert gpo.steps_for(48, epochs=3, batch_size=8) == 18


def test_word_edit_distance():
    assert gpo.word_edit_distance("a b c", "a b c") == 0
    assert gpo.word_edit_distance("a b c", "a x c d") == 2
    assert gpo.word_edit_distance("", "one two") == 2
    assert gpo.word_edit_distance("Let's think step by step.", "Let's think carefully step by step.") == 1


# ---------------------------------------------------------------- retrieval


def entries(*pairs):
    return [{"step": i, "prompt": p, "score": s} for i, (p, s) in enumerate(pairs)]


def keyword_embed(texts):
    """2-d embeddings: how 'math' vs how 'story' a prompt is."""
    return [[t.count("math") + 0.01, t.count("story") + 0.01] for t in texts]


def test_relevance_returns_current_and_most_similar():
    traj = entries(("math math", 0.9), ("story story", 0.8), ("math story story", 0.1), ("story", 0.5),
                   ("math math math", 0.2))
    got = gpo.retrieve(traj, 3, "relevance", embed=keyword_embed)
    assert [e["prompt"] for e in got] == ["math math math", "math math", "math story story"]  # current, then nearest
    shown = [e["score"] for e in gpo.as_shown(got, "gpo", "ours")]
    assert shown == [0.1, 0.2, 0.9]  # our meta-prompt shows them ascending by score
    assert gpo.as_shown(got, "gpo", "release") == got  # GPO's release in retrieval order, the current one first
    assert [e["score"] for e in gpo.as_shown(got, "opro", "release")] == shown  # OPRO keeps our layout
    assert gpo.retrieve(traj[:1], 3, "relevance", embed=keyword_embed) == traj[:1]


def test_relevance_with_the_sentence_embedding_model():
    traj = entries(("Translate the text into French.", 0.9), ("Let us think step by step carefully.", 0.1),
                   ("Write a poem about the sea.", 0.8), ("Let's think step by step.", 0.3))
    got = gpo.retrieve(traj, 2, "relevance")
    assert {e["prompt"] for e in got} == {"Let's think step by step.", "Let us think step by step carefully."}


def test_recency_and_importance():
    traj = entries(("a", 0.5), ("b", 0.9), ("c", 0.1), ("d", 0.7))
    assert [e["prompt"] for e in gpo.retrieve(traj, 2, "recency")] == ["c", "d"]
    assert [e["prompt"] for e in gpo.retrieve(traj, 2, "importance")] == ["b", "d"]  # best first
    with pytest.raises(ValueError, match="retrieval"):
        gpo.retrieve(traj, 2, "random")


def test_opro_retrieves_up_to_20_sorted_ascending():
    opro = gpo.STRATEGIES["OPRO"]
    assert (opro.retrieval, opro.k, opro.schedule) == ("importance", 20, "none")
    traj = entries(*[(f"p{i}", ((i * 7) % 25) / 25) for i in range(25)])
    got = gpo.as_shown(gpo.retrieve(traj, opro.k, opro.retrieval), opro.update, "ours")
    assert len(got) == 20
    assert [e["score"] for e in got] == sorted(e["score"] for e in traj)[5:]
    assert len(gpo.retrieve(traj[:4], opro.k, opro.retrieval)) == 4


# ---------------------------------------------------------------- parsing and selection


def test_marker_parsing_counts_failures():
    texts = ["Here: <START> Be precise. <END>", "no markers at all", "", "<START>  <END>",
             "<START>Be precise.<END>", "<start>Count the steps.<end> trailing"]
    prompts, counts = gpo.parse_candidates(texts)
    assert prompts == ["Be precise.", "Count the steps."]
    assert counts == {"ok": 3, "empty": 2, "missing_markers": 1, "unterminated": 0, "unmarked": 0, "duplicate": 1}


def test_lenient_parsing():
    assert gpo.parse_candidate("<START>Think first", "lenient") == ("Think first", "unterminated")
    assert gpo.parse_candidate('\nPrompt: "Check each step."\nmore', "lenient") == ("Check each step.", "unmarked")
    assert gpo.parse_candidate("   ", "lenient") == (None, "empty")
    with pytest.raises(ValueError, match="parse mode"):
        gpo.parse_candidate("x", "fuzzy")


def test_the_release_parsing_is_gpos_code():
    """From the first <START> (or the beginning) to the first <END> (or the end), case-sensitive."""
    assert gpo.parse_candidate("Sure: <START>Be precise.<END> or <START>x<END>", "release") == ("Be precise.", "ok")
    assert gpo.parse_candidate("<START>Think first\nthen answer", "release") == ("Think first then answer",
                                                                                "unterminated")
    assert gpo.parse_candidate("Count the steps.<END>", "release") == ("Count the steps.", "unmarked")
    assert gpo.parse_candidate("<start>lower<end>", "release") == ("<start>lower<end>", "unmarked")
    assert gpo.parse_candidate("<END> late <START>", "release") == (None, "empty")


def test_selection_moves_to_best_fresh_candidate_even_if_worse():
    cands = [{"prompt": "a", "score": 0.9}, {"prompt": "b", "score": 0.4}, {"prompt": "c", "score": 0.4}]
    assert gpo.select_next(cands, {"a"})["prompt"] == "b"  # best not chosen before; first of ties
    assert gpo.select_next(cands, set())["prompt"] == "a"
    assert gpo.select_next(cands, {"a", "b", "c"}) is None
    traj = entries(("x", 0.5), ("y", 0.8), ("z", 0.8), ("w", 0.2))
    assert gpo.best_entry(traj)["prompt"] == "y"


def test_meta_prompt_holds_the_gpo_parts():
    cur = {"prompt": "Let's think step by step.", "score": 0.5}
    text = gpo.meta_prompt("gpo", cur, [cur], EXEMPLARS, TASK, 40)
    assert "write a prompt to replace <Prompt>" in text
    assert "You are allowed to change up to 40 words in the current prompt." in text
    assert text.count("<Prompt>") >= 3 + 1 and "<START>" in text and "<END>" in text
    assert "score:\n50" in text
    assert "allowed to change" not in gpo.meta_prompt("opro", cur, [cur], EXEMPLARS, TASK, None)


def test_the_release_template_is_the_meta_prompt_of_gpos_code():
    cur, older = {"prompt": "Let's think step by step.", "score": 0.5}, {"prompt": "Be brief.", "score": 0.75}
    text = gpo.meta_prompt("gpo", cur, [cur, older], EXEMPLARS[:1], TASK, 40, template="release")
    assert text == (
        "Your task is to write a prompt to replace <Prompt>.\n\n"
        "Below are the previous prompts with their scores. The score ranges from 0 to 100, and higher scores "
        "indicate better quality.\n\nPrompt: Let's think step by step.\nScore: 0.5\n\n"
        "Prompt: Be brief.\nScore: 0.75"
        "\n\nThe current prompt is:\nLet's think step by step.\n\n" + gpo.RELEASE_EXEMPLARS +
        "\n\nInput:\nexemplar 0?\n<Prompt>\nOutput:\nyes\n\n"
        "Carefully analyze the previous prompts and their scores, and write a new improved prompt to replace "
        "<Prompt> at the end of the question in the task examples.\n"
        "You are allowed to change up to 40 words in the current prompt.\n\n"
        "Wrap the new prompt with <START> and <END>.")
    assert gpo.meta_prompt("opro", cur, [cur], EXEMPLARS, TASK, None, template="release") == \
        gpo.meta_prompt("opro", cur, [cur], EXEMPLARS, TASK, None)  # OPRO and APE keep ours
    with pytest.raises(ValueError, match="template"):
        gpo.meta_prompt("gpo", cur, [cur], EXEMPLARS, TASK, 40, template="theirs")
    with pytest.raises(ValueError, match="template='ours'"):  # GPO's code places the prompt after or before only
        gpo.GPO(template="release", placement="prefix")
    gpo.GPO(strategy="OPRO", template="release", placement="prefix")  # OPRO keeps our layout, which has it


def test_the_release_template_puts_the_current_prompt_first_and_parses_as_gpos_code():
    quality = {"Let's think step by step.": 0.5, "A": 0.9, "B": 0.6}
    script = [wrap("A"), ["<START>B"], ["B<END> and more"]]
    run = gpo.optimize(TASK, ScriptedTaskModel(quality), ScriptedOptimizer(script), DEV, EXEMPLARS, steps=3,
                       candidates=1, template="release", parse="release", embed=keyword_embed)
    for s, before in zip(run.steps, run.trajectory):
        assert s["retrieved"][0]["prompt"] == before["prompt"]  # the current prompt first, whatever its score
    statuses = [[k for k in ("ok", "unterminated", "unmarked") if s["parse"][k]] for s in run.steps]
    assert statuses == [["ok"], ["unterminated"], ["unmarked"]]  # strict would reject the last two, lenient differs
    assert [s["candidates"][0]["prompt"] for s in run.steps] == ["A", "B", "B"]
    assert [e["prompt"] for e in run.trajectory][1:3] == ["A", "B"] and not run.steps[2]["moved"]


def test_the_release_template_draws_gpo_tasks_exemplars_once_from_their_format_pool(data_dir):
    from promptgrad.methods import Engines
    from promptgrad.tasks import Splits

    optimizer = ScriptedOptimizer([wrap("A"), wrap("B")])
    engines = Engines(task=ScriptedTaskModel({}), optimizer=optimizer)
    method = gpo.GPO(steps=2, candidates=1, template="release")
    chosen = method.exemplars_for(TASK, Splits(EXEMPLARS, DEV, []))
    assert len(chosen) == 3 and all("-format-" in e.id for e in chosen)
    assert chosen == gpo.GPO(template="release").exemplars_for(TASK, Splits(EXEMPLARS, DEV, []))  # seeded
    method.optimize(TASK, Splits(EXEMPLARS, DEV, []), engines)
    for request in optimizer.requests:  # the same three at every step
        assert all(f"Input:\n{TASK.format(e, '<Prompt>')}\nOutput:" in request for e in chosen)
    assert gpo.GPO().exemplars_for(TASK, Splits(EXEMPLARS, DEV, [])) == EXEMPLARS[:3]
    with pytest.raises(ValueError, match="template"):
        gpo.GPO(template="theirs")


# ---------------------------------------------------------------- the loop, scripted


def run_scripted(script, quality, **kwargs):
    optimizer, model = ScriptedOptimizer(script), ScriptedTaskModel(quality)
    kwargs = {"steps": 3, "candidates": 3, **kwargs}
    run = gpo.optimize(TASK, model, optimizer, DEV, EXEMPLARS, embed=keyword_embed, **kwargs)
    return run, optimizer, model


def test_loop_moves_selects_and_keeps_the_best():
    quality = {"Let's think step by step.": 0.5, "A": 0.9, "B": 0.6, "C": 0.3, "D": 0.2, "E": 0.1}
    script = [wrap("B", "A", "A"), wrap("A", "C", "D"), ["garbage", "", "<START>E<END>"]]
    run, optimizer, model = run_scripted(script, quality)
    assert [e["prompt"] for e in run.trajectory] == ["Let's think step by step.", "A", "C", "E"]
    assert [e["score"] for e in run.trajectory] == [0.5, 0.9, 0.3, 0.1]  # always moves, even downhill
    assert run.final["prompt"] == "A" and run.final["score"] == 0.9
    assert [s["edit_limit"] for s in run.steps] == [40, 20, 10]
    assert run.steps[0]["parse"]["duplicate"] == 1
    assert run.steps[2]["parse"]["missing_markers"] == 1 and run.steps[2]["parse"]["empty"] == 1
    assert run.parse_failures == 2
    assert "You are allowed to change up to 20 words" in optimizer.requests[1]
    assert run.steps[1]["candidates"][0]["chosen_before"] is True
    assert run.steps[0]["candidates"][0]["edit_distance"] == gpo.word_edit_distance("Let's think step by step.", "B")
    # relevance: the current prompt is always retrieved, at most k=3
    for s, before in zip(run.steps, run.trajectory):
        assert before["prompt"] in [r["prompt"] for r in s["retrieved"]] and len(s["retrieved"]) <= 3
        scores = [r["score"] for r in s["retrieved"]]
        assert scores == sorted(scores)  # logged as our meta-prompt shows them: ascending by score
    # usage apart: 3 optimizer requests x 3 samples; task model 2 turns x 10 dev items per new prompt
    assert run.usage["optimizer"]["model_calls"] == 9
    assert run.usage["task"]["model_calls"] == 2 * N_DEV * 6  # initial, B, A, C, D, E


def test_step_tables_show_each_step_as_a_reader_follows_it():
    quality = {"Let's think step by step.": 0.5, "A": 0.9, "B": 0.6, "C": 0.3, "D": 0.2, "E": 0.1}
    run, _, _ = run_scripted([wrap("B", "A", "A"), wrap("A", "C", "D"), ["garbage", "", "<START>E<END>"]], quality)
    tables = gpo.step_tables(run)
    assert [t["edit_limit"] for t in tables] == [40, 20, 10] and tables[1]["base_prompt"] == "A"
    first = tables[0]["candidates"]
    assert list(first["candidate"]) == ["B", "A"] and list(first["dev"]) == [0.6, 0.9]
    assert list(first["chosen"]) == [False, True]  # the best fresh candidate
    assert len(tables[2]["outputs"]) == 3 and tables[2]["outputs"].iloc[0, 0] == "garbage"
    assert "Let's think step by step." in list(tables[0]["retrieved"]["prompt"])


def test_no_usable_output_never_crashes_and_the_prompt_stays():
    run, _, _ = run_scripted([["no markers", ""]], {}, steps=2, candidates=2)
    assert [e["moved"] for e in run.trajectory[1:]] == [False, False]
    assert run.parse_failures == 4 and run.final["prompt"] == gpo.INITIAL_PROMPT


def test_opro_and_ape_share_the_loop():
    quality = {"A": 0.9, "B": 0.6}
    run, optimizer, _ = run_scripted([wrap("A", "B")], quality, strategy="OPRO", steps=2, candidates=2)
    assert [s["edit_limit"] for s in run.steps] == [None, None]
    assert "allowed to change" not in optimizer.requests[0]
    run, optimizer, _ = run_scripted([wrap("A", "B"), wrap("C", "B")], quality, strategy="APE", steps=2, candidates=2)
    assert run.steps[1]["base_prompt"] == "A"  # APE paraphrases the best so far
    assert "variation" in optimizer.requests[0]


# ---------------------------------------------------------------- checkpoints


SCRIPT = [wrap("B", "A"), wrap("C", "D"), wrap("E", "A"), wrap("F", "G")]
QUALITY = {"A": 0.9, "B": 0.6, "C": 0.3, "D": 0.2, "E": 0.7, "F": 0.4, "G": 0.5}


def test_checkpoint_resume_equals_uninterrupted_run(tmp_path):
    full, full_opt, full_model = run_scripted(SCRIPT, QUALITY, steps=4, candidates=2)
    path = tmp_path / "run.json"
    part, opt1, model1 = run_scripted(SCRIPT, QUALITY, steps=4, candidates=2, checkpoint=path, stop_after_steps=2)
    assert not part.completed and len(part.steps) == 2
    saved = json.loads(path.read_text())
    assert len(saved["steps"]) == 2 and not list(tmp_path.glob("*.tmp"))
    optimizer, model = ScriptedOptimizer(SCRIPT[2:]), ScriptedTaskModel(QUALITY)
    resumed = gpo.optimize(TASK, model, optimizer, DEV, EXEMPLARS, steps=4, candidates=2, checkpoint=path,
                           embed=keyword_embed)
    assert resumed.completed and resumed.trajectory == full.trajectory and resumed.final == full.final
    # the resumed process only paid for the unfinished steps
    assert len(optimizer.requests) == 2 and model.usage.model_calls == 2 * N_DEV * 3  # E, F, G (A was scored)
    assert resumed.usage["optimizer"]["model_calls"] == full.usage["optimizer"]["model_calls"]
    assert resumed.usage["task"]["model_calls"] == full.usage["task"]["model_calls"]


def test_killed_by_a_callback_resumes(tmp_path):
    path = tmp_path / "run.json"

    def kill(step_log):
        if step_log["step"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_scripted(SCRIPT, QUALITY, steps=4, candidates=2, checkpoint=path, on_step=kill)
    resumed, optimizer, _ = run_scripted(SCRIPT[1:], QUALITY, steps=4, candidates=2, checkpoint=path)
    full, _, _ = run_scripted(SCRIPT, QUALITY, steps=4, candidates=2)
    assert resumed.trajectory == full.trajectory and len(optimizer.requests) == 3


def test_corrupt_or_foreign_checkpoint_is_reported(tmp_path):
    path = tmp_path / "run.json"
    run_scripted(SCRIPT, QUALITY, steps=2, candidates=2, checkpoint=path)
    good = path.read_text()
    path.write_text(good[: len(good) // 2])  # truncated
    with pytest.raises(gpo.CheckpointError, match="corrupt"):
        run_scripted(SCRIPT, QUALITY, steps=2, candidates=2, checkpoint=path)
    state = json.loads(good)
    state["steps"].pop()
    path.write_text(json.dumps(state))
    with pytest.raises(gpo.CheckpointError, match="corrupt"):
        run_scripted(SCRIPT, QUALITY, steps=2, candidates=2, checkpoint=path)
    path.write_text(good)
    with pytest.raises(gpo.CheckpointError, match="different settings.*candidates"):
        run_scripted(SCRIPT, QUALITY, steps=2, candidates=3, checkpoint=path)


# ---------------------------------------------------------------- the embedded model


def real_run(engine, **kwargs):
    task = get_task("gpo/bbh/navigate")
    pools = task.pools()
    return gpo.optimize(task, engine, engine, pools["dev"][:3], pools["train"][:3], steps=2, candidates=2,
                        max_tokens=32, optimizer_max_tokens=32, parse="lenient", seed=0, **kwargs)


@pytest.fixture(scope="module")
def real_full(local_engine):
    return real_run(local_engine)


def test_small_optimization_on_the_embedded_model(real_full):
    run = real_full
    assert run.completed and len(run.trajectory) == 3
    assert [s["edit_limit"] for s in run.steps] == gpo.edit_schedule(2, "cosine") == [30, 10]
    for s, before in zip(run.steps, run.trajectory):
        assert s["samples"] == 2
        assert s["base_prompt"] == before["prompt"]
        retrieved = [r["prompt"] for r in s["retrieved"]]
        assert before["prompt"] in retrieved and len(retrieved) <= 3
        assert f"change up to {s['edit_limit']} words" in s["meta_prompt"]
        fresh = [c for c in s["candidates"] if not c["chosen_before"]]
        if fresh:  # always moves, to the best fresh candidate
            assert s["moved"] and s["chosen"] == max(fresh, key=lambda c: c["score"])["prompt"]
        for c in s["candidates"]:
            assert c["edit_distance"] == gpo.word_edit_distance(s["base_prompt"], c["prompt"])
            assert 0 <= c["score"] <= 1
    assert run.final["score"] == max(e["score"] for e in run.trajectory)
    assert run.usage["optimizer"]["model_calls"] == 4
    assert run.usage["task"]["model_calls"] > 0


def test_embedded_run_killed_and_resumed_matches(local_engine, real_full, tmp_path):
    path = tmp_path / "real.json"
    first = real_run(local_engine, checkpoint=path, stop_after_steps=1)
    assert len(first.steps) == 1
    before = local_engine.usage.model_calls
    resumed = real_run(local_engine, checkpoint=path)
    spent_by_resume = local_engine.usage.model_calls - before
    assert resumed.trajectory == real_full.trajectory
    assert [s["candidates"] for s in resumed.steps] == [s["candidates"] for s in real_full.steps]
    # the resumed process did no finished work again: together the two processes spent
    # exactly what the uninterrupted run spent
    full_calls = real_full.usage["task"]["model_calls"] + real_full.usage["optimizer"]["model_calls"]
    first_calls = first.usage["task"]["model_calls"] + first.usage["optimizer"]["model_calls"]
    assert first_calls + spent_by_resume == full_calls
    for role in ("task", "optimizer"):
        assert resumed.usage[role]["model_calls"] == real_full.usage[role]["model_calls"]


def test_table5_means_each_benchmark_apart():
    rows = [{"split": "test", "task": t, "method": m, "accuracy": a}
            for t, m, a in [("gpo/bbh/navigate", "initial", 0.5), ("gpo/bbh/snarks", "initial", 0.7),
                            ("gpo/mmlu/anatomy", "initial", 0.3), ("gpo/bbh/navigate", "GPO", 0.6),
                            ("gpo/mmlu/anatomy", "no instruction", 0.2)]]
    table = papers.gpo_table5(rows, label="ours").set_index("method")
    assert table.loc["CoT", "ours: BBH mean (2 tasks)"] == 60.0
    assert table.loc["CoT", "ours: MMLU mean (1 tasks)"] == 30.0
    assert table.loc["CoT", "ours: bbh/snarks"] == 70.0
    assert pd.isna(table.loc["GPO", "ours: BBH mean (2 tasks)"])  # a mean over part of the tasks is no mean
    assert table.loc["GPO", "paper BBH"] == 35.43
    assert table.loc["Empty", "ours: MMLU mean (1 tasks)"] == 20.0  # the paper's "Empty": no instruction


def test_the_demand_before_a_run_is_what_the_run_asks_when_every_candidate_is_new():
    """``GPO.demand`` (what ``promptgrad.plan`` adds up): the start and every candidate answered on
    dev in two turns, ``candidates`` optimizer samples per step, each call at its token budget.
    Three fresh candidates a step: the run asks exactly that; a duplicate makes it ask less."""
    from promptgrad.tasks import Splits

    budgets = {"task": 0, "optimizer": 0}

    def counting(engine, role):
        generate = engine._generate

        def counted(conversations, *, n, max_tokens, **kwargs):
            budgets[role] += len(conversations) * n * max_tokens
            return generate(conversations, n=n, max_tokens=max_tokens, **kwargs)
        engine._generate = counted
        return engine

    settings = dict(steps=3, candidates=3, max_tokens=16, forced_max_tokens=8, optimizer_max_tokens=32)
    demand = gpo.GPO(**settings).demand(TASK, Splits(train=EXEMPLARS, dev=DEV, test=[]))
    fresh = [wrap("A", "B", "C"), wrap("D", "E", "F"), wrap("G", "H", "I")]
    optimizer = counting(ScriptedOptimizer(fresh), "optimizer")
    run = gpo.optimize(TASK, counting(ScriptedTaskModel({}), "task"), optimizer, DEV, EXEMPLARS, embed=keyword_embed,
                       **settings)
    assert demand["loop"].calls == run.usage["task"]["model_calls"] == 2 * N_DEV * (1 + 3 * 3)
    assert demand["optimizer"].calls == run.usage["optimizer"]["model_calls"] == 9
    assert (demand["loop"].completion_tokens, demand["optimizer"].completion_tokens) == \
        (budgets["task"], budgets["optimizer"])
    repeated, _, _ = run_scripted([wrap("A", "A", "B")] * 3, {}, max_tokens=16)
    assert repeated.usage["task"]["model_calls"] < demand["loop"].calls


def test_the_plan_of_the_paper_profile_counts_what_gpo_asks(data_dir, capsys):
    from promptgrad import plan
    from promptgrad.tasks import make_splits

    assert plan.main(["--profile", "paper", "--only", "02", "-p", "TASKS", '["gpo/bbh/navigate"]']) == 0
    out = capsys.readouterr().out
    dev = len(make_splits("gpo/bbh/navigate", 3, None, None, seed=0).dev)
    loop = next(line for line in out.splitlines() if "| loop " in line).replace(",", "")
    assert re.search(rf"\|\s*{3 * dev * (1 + gpo.steps_for(48) * 8) * 2}\s*\|", loop)  # GPO, OPRO, APE
    assert "gpt-3.5-turbo" in out and "API dollars at most about" in out
