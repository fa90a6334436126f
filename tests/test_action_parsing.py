"""Mapping LLM answers onto admissible commands, on tricky outputs."""

import pytest

from prm_gym.agents.parsing import normalise_command, parse_response

ADMISSIBLE = ["examine desk 1", "go to desk 1", "go to desk 2", "inventory", "look", "take mug 1 from desk 1",
              "move mug 1 to coffeemachine 1"]


@pytest.mark.parametrize(
    ("text", "action", "match"),
    [
        ("REASON: the mug is here\nACTION: take mug 1 from desk 1", "take mug 1 from desk 1", "exact"),
        ("ACTION: go to desk 2", "go to desk 2", "exact"),
        ("Action: `go to desk 2`.", "go to desk 2", "exact"),
        ("> look", "look", "exact"),
        ("  ACTION :  Take the mug 1 from the desk 1.  \nREASON: trailing", "take mug 1 from desk 1", "normalised"),
        ("**ACTION:** \"Go To Desk 1\"", "go to desk 1", "normalised"),
        ("I think I should look around first.\n\nlook", "look", "exact"),
        ("ACTION: go to desk 3", "go to desk 1", "nearest"),
        ("ACTION: put mug 1 in coffeemachine 1", "move mug 1 to coffeemachine 1", "nearest"),
        ("", "examine desk 1", "nearest"),
        ("ACTION: inventory\nACTION: look", "inventory", "exact"),
    ],
)
def test_actions_map_to_admissible_commands(text, action, match):
    parsed = parse_response(text, ADMISSIBLE)
    assert (parsed.action, parsed.match) == (action, match)
    assert parsed.action in ADMISSIBLE


def test_reason_is_read_up_to_the_action_line():
    parsed = parse_response("REASON: The mug\n is on desk 1.\nACTION: go to desk 1", ADMISSIBLE)
    assert parsed.reason == "The mug is on desk 1." and parsed.raw_action == "go to desk 1"
    assert parse_response("THOUGHT: first the desk\nACTION: go to desk 1", ADMISSIBLE).reason == "first the desk"
    assert parse_response("ACTION: look", ADMISSIBLE).reason is None


def test_normalisation_and_empty_commands():
    assert normalise_command("  Go  to THE desk-1!") == "go to desk 1"
    with pytest.raises(ValueError, match="no admissible commands"):
        parse_response("ACTION: look", [])
