"""The context type: built from env steps, hashed stably, stored and rebuilt."""

import gymnasium as gym
import pytest

import prm_gym  # noqa: F401  (registers the environments)
from prm_gym.prm import Context


@pytest.fixture(scope="module")
def walkthrough_contexts():
    env = gym.make("prm_gym/ALFWorld-v0", split="tiny", privileged=("walkthrough",))
    obs, info = env.reset(options={"game": 0})
    context, contexts = Context.from_reset(obs, info), []
    for command in info["walkthrough"]:
        context = context.propose(command, reason="Following the plan.")
        contexts.append(context)
        obs, _, _, _, step_info = env.step(command)
        context = context.advance(obs, step_info)
    env.close()
    return contexts


def test_contexts_follow_the_episode(walkthrough_contexts):
    first, last = walkthrough_contexts[0], walkthrough_contexts[-1]
    assert first.history == () and first.observation.startswith("-= Welcome") and first.task in first.observation
    assert len(last.history) == len(walkthrough_contexts) - 1
    assert [action for _, action in last.history] == [c.action for c in walkthrough_contexts[:-1]]
    assert all(c.action in c.admissible_commands for c in walkthrough_contexts)
    assert all(c.task == first.task for c in walkthrough_contexts)
    assert all(c.game_file and c.game_file.endswith("game.tw-pddl") for c in walkthrough_contexts)


def test_keys_are_stable_and_ignore_the_reason(walkthrough_contexts):
    context = walkthrough_contexts[2]
    assert context.key == context.propose(context.action).key  # reason dropped, same key
    assert context.state_key == context.propose("look").state_key and context.key != context.propose("look").key
    assert len({c.state_key for c in walkthrough_contexts}) == len(walkthrough_contexts)
    # A hash of the content, not of the Python object: the same value in every process and run.
    assert Context(task="t", observation="o", action="a").key == "76efd9b1a18c5cd1070b93492e8f4d07"


def test_round_trip_through_a_row(walkthrough_contexts):
    for context in walkthrough_contexts:
        assert Context.from_dict(context.to_dict()) == context


def test_bad_rows_and_advancing_without_an_action_raise():
    with pytest.raises(ValueError, match="observation"):
        Context.from_dict({"task": "t"})
    with pytest.raises(ValueError, match="pairs"):
        Context.from_dict({"task": "t", "observation": "o", "history": [["only one"]]})
    with pytest.raises(ValueError, match="propose"):
        Context(task="t", observation="o").advance("next", {})
