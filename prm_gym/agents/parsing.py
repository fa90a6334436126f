"""Reading an LLM's answer: its reason and its action, mapped onto an admissible command.

Models answer in the renderer's ``REASON: ... / ACTION: ...`` form (:func:`prm_gym.prm.prompt.format_action`),
more or less. :func:`parse_response` finds the action and maps it to an admissible command by the first of
three paths that works, and says which one fired so that agents can report how often each does:

1. ``exact``: the action is an admissible command;
2. ``normalised``: equal after lower-casing, dropping articles, punctuation and extra spaces;
3. ``nearest``: the admissible command most similar to it (character-level ratio, ties to the first).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["ParsedResponse", "parse_response", "normalise_command"]

MatchPath = Literal["exact", "normalised", "nearest"]

_ACTION = re.compile(r"^\W*action\s*[:：]\s*(.*)$", re.IGNORECASE | re.MULTILINE)
_REASON = re.compile(r"^\W*(?:reason|thought|think)\s*[:：]\s*(.*?)(?=^\W*action\s*[:：]|\Z)", re.I | re.M | re.S)
_ARTICLES = re.compile(r"\b(?:the|a|an)\b")
_NOT_WORD = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class ParsedResponse:
    """An answer read: the admissible command it maps to, the model's reason, and how the match was made."""

    #: An admissible command.
    action: str
    #: The model's reason, when it gave one.
    reason: str | None
    #: Which path mapped the answer to ``action``.
    match: MatchPath
    #: The action text as the model wrote it.
    raw_action: str


def normalise_command(text: str) -> str:
    """Return ``text`` lower-cased, without articles, punctuation or extra spaces.

    Example:
        >>> normalise_command("Take the Mug 1 from desk 1.")
        'take mug 1 from desk 1'
    """
    return " ".join(_NOT_WORD.sub(" ", _ARTICLES.sub(" ", text.lower())).split())


def parse_response(text: str, admissible_commands: Sequence[str]) -> ParsedResponse:
    """Read a model's answer and map its action onto one of ``admissible_commands``.

    The action is the text after the first ``ACTION:`` line (up to the line's end), else the answer's last
    non-empty line; quotes, backticks, asterisks, a leading ``>`` and full stops around it are stripped. The
    reason is the text after ``REASON:`` (or ``THOUGHT:``/``THINK:``) up to the ``ACTION:`` line.

    Example:
        >>> answer = chr(10).join(["REASON: The mug is on the desk.", "ACTION: take the mug 1 from desk 1"])
        >>> parsed = parse_response(answer, ["go to desk 1", "take mug 1 from desk 1"])
        >>> parsed.action, parsed.reason, parsed.match
        ('take mug 1 from desk 1', 'The mug is on the desk.', 'normalised')

    Raises:
        ValueError: when ``admissible_commands`` is empty.
    """
    if not admissible_commands:
        raise ValueError("Cannot map an answer to an action: there are no admissible commands.")
    found = _ACTION.search(text)
    if found:
        raw = found.group(1)
    else:
        lines = [line for line in text.splitlines() if line.strip()]
        raw = lines[-1] if lines else ""
    raw = raw.strip().lstrip(">").strip(" \t`'\"*.")
    reason_match = _REASON.search(text)
    reason = " ".join(reason_match.group(1).split()) or None if reason_match else None
    if raw in admissible_commands:
        return ParsedResponse(raw, reason, "exact", raw)
    wanted = normalise_command(raw)
    for command in admissible_commands:
        if normalise_command(command) == wanted:
            return ParsedResponse(command, reason, "normalised", raw)
    ratios = [difflib.SequenceMatcher(None, wanted, normalise_command(c)).ratio() for c in admissible_commands]
    best = max(range(len(ratios)), key=ratios.__getitem__)
    return ParsedResponse(admissible_commands[best], reason, "nearest", raw)
