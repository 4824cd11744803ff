from pathlib import Path

import pytest
import yaml

from promptgrad.extraction import canonical_target, extract_answer

CASES = [tuple(case) for case in  # a table of data: [answer kind, text, what the extractor reads]
         yaml.safe_load((Path(__file__).parent / "extraction_cases.yaml").read_text(encoding="utf-8"))]


@pytest.mark.parametrize("kind,text,expected", CASES)
def test_extract_answer(kind, text, expected):
    assert extract_answer(text, kind) == expected


def test_canonical_targets():
    assert canonical_target("(A)", "choice") == "A"
    assert canonical_target("Yes", "yesno") == "yes"
    assert canonical_target(" 1,000 ", "number") == "1000"
    assert canonical_target(4, "number") == "4"
    assert canonical_target("The Beatles", "text") == "beatles"


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="Unknown answer kind"):
        extract_answer("x", "colour")


def test_marked_text_takes_the_last_pair_and_leniently_an_unclosed_marker_up_to_a_blank_line():
    from promptgrad.extraction import marked_text
    quoted = "Current: <prompt>old {question}</prompt>\nNew: <prompt>new {question}</prompt>"
    assert marked_text(quoted, "<prompt>", "</prompt>") == ("new {question}", "ok")
    unclosed = "Sure.\n<prompt>Check each step.\n\nThe original prompt was:\n<prompt>old"
    assert marked_text(unclosed, "<prompt>", "</prompt>") == (None, "missing_markers")
    assert marked_text(unclosed, "<prompt>", "</prompt>", "lenient") == ("Check each step.", "unterminated")


def test_an_option_text_maps_to_its_letter():
    from promptgrad.extraction import parse_options

    options = parse_options("Which way?\nOptions:\n(A) east\n(B) north-east\n(C) west")
    assert options == {"A": "east", "B": "north-east", "C": "west"}
    assert extract_answer("east", "choice", options) == "A"
    assert extract_answer("The answer is: North-East.", "choice", options) == "B"
    assert extract_answer("somewhere east of here", "choice", options) is None  # not exactly an option
    assert extract_answer("east", "choice") is None  # without the options there is no letter


def test_dyck_gold_answers_score_themselves(data_dir):
    from promptgrad.tasks import get_task

    task = get_task("bbh/dyck_languages")
    examples = task.pools()["all"]
    assert all(ex.target for ex in examples)  # no gold normalizes to ''
    assert all(task.extract(ex.target, ex) == ex.target for ex in examples)


def test_gold_answers_score_themselves_on_every_bbh_task(data_dir):
    from promptgrad.tasks import BBH_TASKS, get_task

    for name in BBH_TASKS:
        task = get_task(f"bbh/{name}")
        # three rows of BBH itself (movie_recommendation 1, ruin_names 2) have an option's text as gold,
        # split across options by a comma; no answer can match them
        examples = [ex for ex in task.pools()["all"] if task.kind != "choice" or len(ex.target) == 1]
        hits = sum(task.extract(ex.target if task.kind != "choice" else f"({ex.target})", ex) == ex.target
                   for ex in examples)
        assert hits == len(examples), f"bbh/{name}: {hits}/{len(examples)} gold answers score"
