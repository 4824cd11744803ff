"""Answer extraction: from a model's free text to a canonical answer, or ``None`` when
the text holds no answer in the expected format (a *format failure*, reported apart
from wrong answers).

One rule per answer kind, applied the same way to every prompt and method:
1. an explicit marker wins ("the answer is X", "Answer: X", GSM8K's "#### X");
2. else the first word, when it is an answer ("Positive. The review...");
3. else the answer, when exactly one distinct answer is mentioned in the first
   sentence, or else in the whole text; several different ones are ambiguous and
   count as a format failure.
Numbers take the last number instead of rule 3 (reasoning ends with the result), and a
LaTeX ``\\boxed{N}`` counts as a marker (Qwen2.5-Math writes one). Option letters follow GPO's
and OPRO's scorers: lower case counts ("(b)", "b"), an answer that is exactly one option's text
maps to its letter, and a word that reads as a pronoun or article ("I cannot...", "A dog...")
is never a letter. Bracket sequences (BBH's dyck_languages) keep only the brackets.
"""

from __future__ import annotations

import re
import string

LABELS = {
    "yesno": ("yes", "no"),
    "validity": ("valid", "invalid"),
    "truefalse": ("true", "false"),
    "sentiment": ("positive", "negative"),
}
KINDS = ("number", "choice", "text", "brackets", "open", *LABELS)

_MARKER = r"(?:the\s+)?(?:final\s+)?answer\s*(?:is|:|=)?\s*:?\s*"
_NUMBER = r"-?\$?\s?\d[\d,]*(?:\.\d+)?"


def normalize_number(text: str) -> str | None:
    """'$1,234.50' -> '1234.5', '18.00' -> '18'; None if it is not a number."""
    cleaned = text.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return str(int(value)) if value == int(value) else repr(value)


def extract_number(text: str) -> str | None:
    for pattern in (r"####\s*(" + _NUMBER + ")", r"\\boxed\{\s*(" + _NUMBER + r")\s*\}",
                    _MARKER + r"(" + _NUMBER + ")"):
        found = re.findall(pattern, text, flags=re.IGNORECASE)
        if found:
            return normalize_number(found[-1])
    found = re.findall(_NUMBER, text)
    return normalize_number(found[-1]) if found else None


# An option letter: in parentheses (any case); or followed by ')', '.', ':' or the end of the
# text (any case); or an upper-case letter other than A and I, which open sentences as words.
_LETTER = r"(?:\(([A-Ra-r])\)|([A-Ra-r])(?=[).:]|\s*$)|([B-HJ-R])(?![\w'’]))"


def _letter(match: tuple[str, ...]) -> str:
    return next(g for g in match if g).upper()


def parse_options(question: str) -> dict[str, str]:
    """The options listed in a question, ``{"A": "east", ...}`` from lines like ``(A) east``."""
    return dict(re.findall(r"^\s*\(([A-R])\)\s*(.+?)\s*$", question, flags=re.MULTILINE))


def extract_choice(text: str, options: dict[str, str] | None = None) -> str | None:
    """An option letter: '(B)', 'b)', 'Answer: B', 'The answer is (b).' -> 'B'; with ``options``
    (``parse_options``), an answer that is exactly one option's text -> that option's letter."""
    explicit = re.findall(_MARKER + _LETTER, text, flags=re.IGNORECASE)
    if explicit:
        return _letter(explicit[-1])
    first = re.match(r"\s*" + _LETTER, text)
    if first:
        return _letter(first.groups())
    mentioned = {m.upper() for m in re.findall(r"\(([A-Ra-r])\)", text)}
    if mentioned:
        return mentioned.pop() if len(mentioned) == 1 else None
    if options:
        said = normalize_text(_after_marker(text) or text)
        hits = [letter for letter, option in options.items() if normalize_text(option) == said]
        return hits[0] if len(hits) == 1 else None
    return None


def extract_brackets(text: str) -> str | None:
    """A bracket sequence (BBH dyck_languages): after a marker, else the first line; only the
    brackets are kept, space separated ('] }' and 'the answer is ]}' both give '] }')."""
    return " ".join(re.findall(r"[()\[\]{}<>]", _after_marker(text) or _first_line(text))) or None


def extract_label(text: str, labels: tuple[str, ...]) -> str | None:
    """One of ``labels`` (lower case words) by the three rules above."""
    words = "|".join(sorted(map(re.escape, labels), key=len, reverse=True))
    lowered = text.lower()
    explicit = re.findall(_MARKER + r"\W{0,3}(" + words + r")\b", lowered)
    if explicit:
        return explicit[-1]
    first = re.match(r"\W*(" + words + r")\b", lowered)
    if first:
        return first.group(1)
    first_sentence = re.split(r"(?<=[.!?])\s|\n", lowered.strip(), maxsplit=1)[0]
    for span in (first_sentence, lowered):
        mentioned = set(re.findall(r"(?<![\w-])(" + words + r")(?![\w-])", span))
        if mentioned:
            return mentioned.pop() if len(mentioned) == 1 else None
    return None


def _after_marker(text: str) -> str | None:
    """What follows the last "the answer is" / "Answer:" marker on its line, if any."""
    found = re.findall(_MARKER + r"(.+)", text, flags=re.IGNORECASE)
    return found[-1] if found else None


def _first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), "")


def normalize_text(text: str) -> str:
    """SQuAD-style: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def extract_text(text: str) -> str | None:
    """A short free-form answer: after an explicit marker, else the first line."""
    return normalize_text(_after_marker(text) or _first_line(text)) or None


def extract_answer(text: str, kind: str, options: dict[str, str] | None = None) -> str | None:
    """The canonical answer in ``text``; ``options`` (choice tasks) lets an option's text count."""
    if kind == "number":
        return extract_number(text)
    if kind == "choice":
        return extract_choice(text, options)
    if kind == "text":
        return extract_text(text)
    if kind == "brackets":
        return extract_brackets(text)
    if kind in LABELS:
        return extract_label(text, LABELS[kind])
    raise ValueError(f"Unknown answer kind '{kind}'; expected one of {KINDS} ('open' has no extraction).")


def canonical_target(target, kind: str) -> str:
    """The gold answer in the extractor's canonical form ('(A)' -> 'A', 'Yes' -> 'yes')."""
    target = str(target).strip()
    if kind == "number":
        return normalize_number(target) or target
    if kind == "choice":
        match = re.fullmatch(r"\(?([A-R])\)?", target)
        return match.group(1) if match else target
    if kind == "text":
        return normalize_text(target)
    if kind == "brackets":
        return extract_brackets(target) or target
    return target.lower()


# ---------------------------------------------------------------- optimizer outputs

PARSE_MODES = ("strict", "lenient", "release")
_LABEL = re.compile(r"^(new |improved |rewritten )?(prompt|instruction|output|answer)\s*:\s*", re.IGNORECASE)


def marked_text(text: str | None, start: str, end: str, mode: str = "strict") -> tuple[str | None, str]:
    """The text an optimizer wrote between the markers ``start`` and ``end``, and a status.

    strict: the last complete pair (an editor that first quotes the current prompt puts its new
    one last): ``ok``, ``empty`` (empty output or nothing between the markers) or
    ``missing_markers``. lenient (our choice for optimizers too small to follow the format):
    also an opened but unclosed ``start``, up to a blank line or the next ``start``
    (``unterminated``), or else the first non-empty line (``unmarked``), label and quotes stripped.
    release (GPO's released code): from the first ``start`` (or the beginning) to the first ``end``
    (or the end), case-sensitive.
    """
    if mode not in PARSE_MODES:
        raise ValueError(f"Unknown parse mode '{mode}'; expected one of {PARSE_MODES}.")
    if text is None or not text.strip():
        return None, "empty"
    if mode == "release":
        opened, closed = start in text, end in text
        body = text[text.index(start) + len(start) if opened else 0:text.index(end) if closed else len(text)].strip()
        status = "ok" if opened and closed else "unterminated" if opened else "unmarked"
        return (body, status) if body else (None, "empty")
    s, e = re.escape(start), re.escape(end)
    pairs = re.findall(f"{s}(.*?){e}", text, re.DOTALL | re.IGNORECASE)
    if pairs:
        body = pairs[-1].strip()
        return (body, "ok") if body else (None, "empty")
    if mode == "strict":
        return None, "missing_markers"
    opened = re.search(f"{s}(.*?)(?:{s}|\\n\\s*\\n|$)", text, re.DOTALL | re.IGNORECASE)
    if opened is not None:
        body, status = opened.group(1), "unterminated"
    else:
        body, status = next(line for line in text.splitlines() if line.strip()), "unmarked"
    body = _LABEL.sub("", body.strip()).strip().strip('"\'').strip()
    return (body, status) if body else (None, "empty")
