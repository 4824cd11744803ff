import pytest

from promptgrad.extraction import canonical_target, extract_answer

CASES = [
    # numbers (GSM8K)
    ("number", "She makes 9 * 2 = $18 every day.\n#### 18", "18"),
    ("number", "The answer is $1,234.", "1234"),
    ("number", "So 3 + 4 = 7 apples, and the answer is 7.00", "7"),
    ("number", "First 12, then 15, finally 20.", "20"),
    ("number", "Answer: -3", "-3"),
    ("number", "#### 5\nThe answer is 6", "5"),
    ("number", "I cannot solve this.", None),
    # option letters
    ("choice", "The answer is (B).", "B"),
    ("choice", "(C) is correct because ...", "C"),
    ("choice", "B) 12/25/1937", "B"),
    ("choice", "Answer: D", "D"),
    ("choice", "Between (A) and (B), I'd say...", None),
    ("choice", "Let me think about the options.", None),
    ("choice", "After checking, (A) fits; the answer is (E)", "E"),
    # yes / no
    ("yesno", "Yes, because the wire touched the battery.", "yes"),
    ("yesno", "No\n\nThe answer is: No", "no"),
    ("yesno", "A typical person would say no.", "no"),
    ("yesno", "It could be yes or no.", None),
    ("yesno", "Nobody knows.", None),
    ("yesno", "So the answer is Yes.", "yes"),
    # valid / invalid (invalid contains valid)
    ("validity", "The argument is invalid.", "invalid"),
    ("validity", "valid", "valid"),
    ("validity", "It is not valid, so invalid.", None),
    # true / false
    ("truefalse", "True", "true"),
    ("truefalse", "The expression evaluates to False.", "false"),
    # sentiment
    ("sentiment", "positive", "positive"),
    ("sentiment", "This review is negative, as it criticizes the plot.", "negative"),
    ("sentiment", "The sentiment is neutral, neither positive nor negative.", None),
    ("sentiment", "The sentiment of this review is neutral. The reviewer is positive about it.", "positive"),
    ("sentiment", "I think it's great.", None),
    # short free text (HotPotQA, BBH word sorting)
    ("text", "The answer is: Chief of Protocol.", "chief of protocol"),
    ("text", "The Beatles\nThey were a band.", "beatles"),
    ("text", "", None),
]


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
