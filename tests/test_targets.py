"""Monte-Carlo Q targets on hand-made trajectories whose answers are worked out by hand."""

import dataclasses
import json
import logging

import pytest

from prm_gym.prm import Context
from prm_gym.prm.targets import (
    TargetRow,
    TargetsConfig,
    compute_targets,
    load_targets,
    preference_pairs,
    save_targets,
    spread_games,
    step_return,
)
from prm_gym.rollout import Episode, Step

# Two episodes that share their first (state, action) and their second state, then part ways.
WON = Episode.from_actions(
    "task", ["intro", "room A", "room B"], ["go a", "take x", "put x"], won=True, episode_id="0:0"
)
LOST = Episode.from_actions(
    "task", ["intro", "room A", "room C", "room D"], ["go a", "take y", "look", "look"], won=False, episode_id="0:1"
)
HALF = TargetsConfig(gamma=0.5)


def by_action_and_turn(rows):
    return {(row.context.action, len(row.context.history)): (row.q, row.visits) for row in rows}


def test_to_end_discount_is_the_papers_equation_1():
    # won returns 0.25, 0.5, 1; lost returns -0.125, -0.25, -0.5, -1; q = (mean + 1) / 2.
    assert by_action_and_turn(compute_targets([WON, LOST], HALF)) == {
        ("go a", 0): ((0.25 - 0.125) / 2 / 2 + 0.5, 2),
        ("take x", 1): (0.75, 1),
        ("put x", 2): (1.0, 1),
        ("take y", 1): (0.375, 1),
        ("look", 2): (0.25, 1),
        ("look", 3): (0.0, 1),
    }


def test_from_start_discount():
    # won returns 1, 0.5, 0.25; lost returns -1, -0.5, -0.25, -0.125.
    rows = compute_targets([WON, LOST], TargetsConfig(gamma=0.5, discount="from_start"))
    assert by_action_and_turn(rows) == {
        ("go a", 0): (0.5, 2),
        ("take x", 1): (0.75, 1),
        ("put x", 2): (0.625, 1),
        ("take y", 1): (0.25, 1),
        ("look", 2): (0.375, 1),
        ("look", 3): (0.4375, 1),
    }


def test_default_config_is_the_papers_normalisation():
    rows = by_action_and_turn(compute_targets([WON, LOST]))
    assert rows[("go a", 0)][0] == pytest.approx(((0.95**2 - 0.95**3) / 2 + 1) / 2)
    assert rows[("put x", 2)] == (1.0, 1) and rows[("look", 3)] == (0.0, 1)


def test_outcomes_set_the_normalisation():
    rows = by_action_and_turn(compute_targets([WON, LOST], TargetsConfig(gamma=0.5, loss_outcome=0.0)))
    assert rows[("go a", 0)] == (0.125, 2) and rows[("take y", 1)] == (0.0, 1) and rows[("take x", 1)] == (0.5, 1)


def test_rows_are_keyed_by_context_and_carry_the_context():
    rows = compute_targets([WON, LOST, WON], HALF)
    assert [row.key for row in rows] == [step.context.key for step in WON.steps] + [
        step.context.key for step in LOST.steps[1:]
    ]
    assert rows[0].visits == 3 and rows[1].visits == 2 and rows[1].context == WON.steps[1].context
    assert rows[1].state_key == rows[3].state_key != rows[0].state_key


def test_wins_count_the_won_rollouts_through_each_pair():
    rows = compute_targets([WON, LOST, WON], HALF)
    assert [(row.context.action, row.visits, row.wins) for row in rows] == [
        ("go a", 3, 2), ("take x", 2, 2), ("put x", 2, 2), ("take y", 1, 0), ("look", 1, 0), ("look", 1, 0)
    ]


def test_success_is_most_rollouts_won_not_q_above_one_half():
    # "go a": one win 2 steps from the end (0.25) and one loss 3 steps from it (-0.125): q > 0.5, half won.
    go_a = compute_targets([WON, LOST], HALF)[0]
    assert go_a.q > 0.5 and (go_a.visits, go_a.wins) == (2, 1) and not go_a.success
    # Two far wins (0.25 each) and a loss at the end (-1): q < 0.5, but two rollouts in three won.
    lost_at_once = Episode.from_actions("task", ["intro"], ["go a"], won=False, episode_id="0:2")
    go_a = compute_targets([WON, WON, lost_at_once], HALF)[0]
    assert go_a.q < 0.5 and (go_a.visits, go_a.wins) == (3, 2) and go_a.success


def test_success_falls_back_to_q_without_wins():
    row = TargetRow(Context("t", observation="o", action="a"), 0.6, 2)
    assert row.wins is None and row.success
    assert not dataclasses.replace(row, q=0.4).success and not dataclasses.replace(row, wins=1).success


def test_min_visits_drops_rare_pairs():
    rows = compute_targets([WON, LOST], TargetsConfig(gamma=0.5, min_visits=2))
    assert [(row.context.action, row.visits) for row in rows] == [("go a", 2)]


def in_game(episode, game):
    steps = [dataclasses.replace(s, context=dataclasses.replace(s.context, game_file=game)) for s in episode.steps]
    return dataclasses.replace(episode, steps=tuple(steps))


def test_num_games_keeps_the_rollouts_of_games_spread_over_their_order():
    rollouts = [in_game(WON, "g1"), in_game(LOST, "g2"), in_game(LOST, "g1")]
    rows = compute_targets(rollouts, TargetsConfig(gamma=0.5, num_games=1))
    assert {row.game_file for row in rows} == {"g1"}
    assert by_action_and_turn(rows) == by_action_and_turn(compute_targets([WON, LOST], HALF))  # g1's two rollouts
    assert len(compute_targets(rollouts, TargetsConfig(num_games=5))) == len(compute_targets(rollouts))
    four = [*rollouts, in_game(WON, "g3"), in_game(LOST, "g4")]  # games listed g1, g2, g3, g4: every other one
    assert [e.steps[0].context.game_file for e in spread_games(four, 2)] == ["g1", "g1", "g3"]


def test_preference_pairs_compare_actions_at_one_state():
    rows = compute_targets([WON, LOST], HALF)  # at "room A": take x 0.75, take y 0.375
    pairs = preference_pairs(rows, delta=0.3)
    assert [(chosen.context.action, rejected.context.action) for chosen, rejected in pairs] == [("take x", "take y")]
    assert preference_pairs(rows, delta=0.4) == []
    start = Context("t", observation="o")
    low_first = [TargetRow(start.propose("a"), 0.1, 1), TargetRow(start.propose("b"), 0.9, 1)]
    assert [(c.context.action, r.context.action) for c, r in preference_pairs(low_first, 0.5)] == [("b", "a")]


@pytest.mark.parametrize("delta", [0.0, -0.1, 1.5])
def test_preference_pairs_reject_bad_delta(delta):
    with pytest.raises(ValueError, match="`delta` should be in the interval"):
        preference_pairs([], delta)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gamma": 1.5}, "`gamma` should be in the interval"),
        ({"discount": "backwards"}, "`discount` should be one of"),
        ({"win_outcome": 0.0, "loss_outcome": 0.0}, "`win_outcome` should be greater"),
        ({"min_visits": 0}, "`min_visits` should be at least 1"),
        ({"num_games": 0}, "`num_games` should be at least 1"),
    ],
)
def test_bad_config_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TargetsConfig(**kwargs)


def test_from_start_return_needs_the_step_index():
    with pytest.raises(ValueError, match="needs the step's index"):
        step_return(True, 2, TargetsConfig(discount="from_start"))
    assert step_return(True, 2, TargetsConfig(gamma=0.5, discount="from_start"), t=1) == 0.5


def test_empty_or_actionless_input_is_an_error():
    with pytest.raises(ValueError, match="No episodes"):
        compute_targets([])
    actionless = Episode("0:0", (Step(Context("t", observation="o")),))
    with pytest.raises(ValueError, match="has no action"):
        compute_targets([actionless])


def test_save_and_load_round_trip(tmp_path):
    rows = compute_targets([WON, LOST], HALF)
    folder = save_targets(rows, tmp_path / "targets", HALF, source={"collect": {"split": "tiny"}})
    assert load_targets(folder) == rows
    meta = json.loads((folder / "config.json").read_text())
    assert meta["targets"]["gamma"] == 0.5 and meta["source"] == {"collect": {"split": "tiny"}}
    first = json.loads((folder / "targets.jsonl").read_text().splitlines()[0])
    assert first["key"] == rows[0].key and first["history"] == [] and first["visits"] == 2 and first["wins"] == 1


def test_old_files_without_wins_load_with_the_q_label_and_a_warning(tmp_path, caplog):
    rows = compute_targets([WON, LOST], HALF)
    old = [{k: v for k, v in row.to_dict().items() if k != "wins"} for row in rows]
    (tmp_path / "targets.jsonl").write_text("".join(json.dumps(row) + "\n" for row in old))
    with caplog.at_level(logging.WARNING, logger="prm_gym.prm.targets"):
        loaded = load_targets(tmp_path)
    assert loaded == [dataclasses.replace(row, wins=None) for row in rows]
    assert [row.success for row in loaded] == [row.q > 0.5 for row in rows]
    assert "6 of the 6 rows" in caplog.text and "have no `wins`" in caplog.text
    caplog.clear()
    save_targets(rows, tmp_path, HALF)
    load_targets(tmp_path)
    assert "wins" not in caplog.text


def test_saving_nothing_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="No targets to save"):
        save_targets([], tmp_path, HALF)


def test_loading_bad_folders_says_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="No targets at"):
        load_targets(tmp_path / "missing")
    (tmp_path / "targets.jsonl").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        load_targets(tmp_path)
    row = TargetRow(Context("t", observation="o", action="a"), 0.5, 1).to_dict()
    (tmp_path / "targets.jsonl").write_text(json.dumps(row) + "\n{not json\n")
    with pytest.raises(ValueError, match="Line 2 .* not valid JSON"):
        load_targets(tmp_path)
    del row["q"]
    (tmp_path / "targets.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=r"Line 1 .*needs the fields \['q'\]"):
        load_targets(tmp_path)
    (tmp_path / "targets.jsonl").write_text(json.dumps({**row, "q": "high"}) + "\n")
    with pytest.raises(ValueError, match="`q` is a number"):
        load_targets(tmp_path)


@pytest.mark.parametrize("wins", [-1, 2, 0.5, True, "1"])
def test_loading_bad_wins_says_what_is_wrong(tmp_path, wins):
    row = {**TargetRow(Context("t", observation="o", action="a"), 0.5, 1).to_dict(), "wins": wins}
    (tmp_path / "targets.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=r"Line 1 .*`wins` is an integer in \[0, visits=1\]"):
        load_targets(tmp_path)
