"""FastALFWorldEngine: turn-for-turn parity with TextWorld's engine on real games, grounding, engine snapshots.

The full sweep (every valid_seen and valid_unseen game, 300 train games) is benchmarks/fast_engine_parity.py;
here a seeded sample of 24 games (4 per task type, half valid_seen, half valid_unseen) catches regressions.
"""

import dataclasses
import pickle
import random
from dataclasses import FrozenInstanceError

import pytest
from alfworld.agents.environment.alfred_tw_env import AlfredDemangler

from prm_gym.envs.alfworld import TASK_TYPES, list_games
from prm_gym.envs.alfworld.fast import FastALFWorldEngine, FastSnapshot, clear_game_cache
from prm_gym.envs.alfworld.fast.grounding_check import translator_differences
from prm_gym.envs.alfworld.fast.parity import GARBAGE, check_game
from prm_gym.envs.engine import GameTurn, ReplaySnapshot, TextWorldEngine


def games_of(split, task_type):
    return list_games(split, task_types=task_type)


def reference_engine():
    return TextWorldEngine(wrappers=[AlfredDemangler(shuffle=False)])


@pytest.mark.parametrize("task_type", [t.name for t in TASK_TYPES.values()])
def test_parity_with_textworld_on_a_seeded_sample(alfworld_data_dir, task_type):
    rng = random.Random(f"parity:{task_type}")
    games = [game for split in ("valid_seen", "valid_unseen") for game in rng.sample(games_of(split, task_type), 2)]
    reference, fast = reference_engine(), FastALFWorldEngine()
    steps, foreign = 0, []
    for game in games:
        counts = check_game(game, reference, fast, random_walks=2, steps=20, seed=0, foreign=foreign)
        assert counts.mismatches == 0, "\n".join(counts.failures)
        steps += counts.steps
        foreign = list(fast.walkthrough or ())
    assert steps > 4 * 40


def test_parity_check_catches_a_wrong_engine(alfworld_data_dir):
    class Wrong(FastALFWorldEngine):
        def step(self, command):
            turn = super().step(command)
            return dataclasses.replace(turn, feedback=turn.feedback.upper())

    counts = check_game(list_games("tiny")[0], reference_engine(), Wrong(), random_walks=1, steps=3)
    assert counts.mismatches == 2 and "feedback differs" in counts.failures[0]


def test_parity_walks_are_the_same_wherever_the_data_lies(alfworld_data_dir, tmp_path):
    game = list_games("valid_unseen", task_types="pick_heat")[0]
    elsewhere = tmp_path / "unpacked" / "elsewhere"
    elsewhere.mkdir(parents=True)
    (elsewhere / game.parents[1].name).symlink_to(game.parents[1], target_is_directory=True)
    moved = elsewhere / game.parents[1].name / game.parent.name / game.name
    here, there = (check_game(path, FastALFWorldEngine(), FastALFWorldEngine(), seed=0) for path in (game, moved))
    assert there.steps == here.steps and there.inadmissible == here.inadmissible and there.verbs == here.verbs
    assert sum(here.verbs.values()) > 20  # the walks played something


@pytest.mark.parametrize("task_type", ["look", "pick_two", "pick_heat", "pick_clean"])
def test_grounding_matches_fast_downward_translator(alfworld_data_dir, task_type):
    assert translator_differences(list_games("valid_unseen", task_types=task_type)[-1]) == []


@pytest.fixture(scope="module")
def game():
    return list_games("tiny", task_types="pick_heat")[0]


def play(engine, rng, n):
    """Play n seeded random admissible commands (and a few garbage ones); return (command, turn) pairs."""
    history = []
    turn = engine.snapshot().turn
    for _ in range(n):
        command = rng.choice(turn.admissible_commands) if rng.random() < 0.9 else rng.choice(GARBAGE)
        turn = engine.step(command)
        history.append((command, turn))
    return history


def replay(engine, history):
    return [(command, engine.step(command)) for command, _ in history]


def test_inadmissible_commands_read_nothing_happens_and_change_nothing(game):
    engine = FastALFWorldEngine()
    engine.load(game)
    start = engine.reset()
    for command in GARBAGE:
        turn = engine.step(command)
        assert turn == GameTurn("Nothing happens.", start.admissible_commands, 0.0, False, False)
    assert engine.step(f"  {start.admissible_commands[0]}\t").feedback != "Nothing happens."


@pytest.mark.parametrize("engine_class", [FastALFWorldEngine, reference_engine])
def test_snapshot_branch_play_restore_replay(game, engine_class):
    engine = engine_class()
    engine.load(game)
    engine.reset()
    rng = random.Random(0)
    play(engine, rng, 5)
    snapshot = engine.snapshot()
    here = snapshot.turn
    branch = play(engine, rng, 8)
    assert engine.restore(snapshot) == here
    assert engine.snapshot() == snapshot
    assert replay(engine, branch) == branch
    # Restoring twice, and after another branch, still replays the same game.
    play(engine, random.Random(1), 4)
    assert engine.restore(snapshot) == here
    assert replay(engine, branch) == branch


def test_snapshot_kinds(game):
    fast, reference = FastALFWorldEngine(), reference_engine()
    for engine in (fast, reference):
        engine.load(game)
        engine.reset()
        engine.step("look")
    assert isinstance(fast.snapshot(), FastSnapshot)
    assert reference.snapshot() == ReplaySnapshot(str(game), reference.snapshot().turn, ("look",))
    with pytest.raises(TypeError, match="FastALFWorldEngine restores FastSnapshots"):
        fast.restore(reference.snapshot())


def test_snapshot_is_immutable_and_survives_pickle(game):
    engine = FastALFWorldEngine()
    engine.load(game)
    engine.reset()
    rng = random.Random(2)
    play(engine, rng, 5)
    snapshot = engine.snapshot()
    with pytest.raises(FrozenInstanceError):
        snapshot.turn = None  # type: ignore[misc]
    branch = play(engine, rng, 20)
    copy = pickle.loads(pickle.dumps(snapshot))
    assert copy == snapshot and copy is not snapshot
    assert engine.restore(copy) == snapshot.turn
    assert replay(engine, branch) == branch


def test_snapshot_restores_in_a_fresh_engine_on_the_same_game(game):
    engine = FastALFWorldEngine()
    engine.load(game)
    engine.reset()
    rng = random.Random(3)
    play(engine, rng, 6)
    snapshot = pickle.loads(pickle.dumps(engine.snapshot()))
    branch = play(engine, rng, 20)
    clear_game_cache()  # the fresh engine grounds the game again
    fresh = FastALFWorldEngine()
    fresh.load(game)
    assert fresh.restore(snapshot) == snapshot.turn
    assert fresh.walkthrough == engine.walkthrough
    assert replay(fresh, branch) == branch


def test_restore_refuses_another_game_and_non_snapshots(game):
    engine = FastALFWorldEngine()
    engine.load(game)
    engine.reset()
    snapshot = engine.snapshot()
    engine.load(list_games("tiny", task_types="pick_cool")[0])
    with pytest.raises(ValueError, match="`load` the snapshot's game first"):
        engine.restore(snapshot)
    with pytest.raises(TypeError, match="Received str"):
        engine.restore("not a snapshot")  # type: ignore[arg-type]


@pytest.mark.parametrize("engine_class", [FastALFWorldEngine, reference_engine])
def test_errors_before_load_and_reset(tmp_path, engine_class):
    engine = engine_class()
    with pytest.raises(RuntimeError, match="load"):
        engine.reset()
    with pytest.raises(FileNotFoundError, match="missing.tw-pddl"):
        engine.load(tmp_path / "missing.tw-pddl")
    with pytest.raises(RuntimeError, match="load"):
        engine.step("look")
    with pytest.raises(RuntimeError, match="reset"):
        engine.snapshot()


def test_fast_engine_refuses_files_that_are_not_alfworld_games(tmp_path):
    not_json = tmp_path / "game.tw-pddl"
    not_json.write_text("(define (problem p))")
    with pytest.raises(ValueError, match="Cannot play .* with the fast engine: .* not an ALFWorld"):
        FastALFWorldEngine().load(not_json)
