"""The game-text space: its members, and their exact round trip through AsyncVectorEnv's shared memory."""

import copy
import dataclasses

import gymnasium as gym
import pytest
from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

import prm_gym  # noqa: F401  (registers the environments)
from prm_gym.envs.alfworld import list_games
from prm_gym.envs.alfworld.fast import FastALFWorldEngine
from prm_gym.envs.engine import GameTurn
from prm_gym.envs.spaces import GameText, SharedTexts
from prm_gym.envs.text_game_env import MAX_OBSERVATION_LENGTH, TEXT_CHARSET, TextGameEnv


def test_shared_memory_is_a_live_view_of_every_write():
    space = GameText(max_length=MAX_OBSERVATION_LENGTH, charset=TEXT_CHARSET)
    memory = create_shared_memory(space, n=2)
    texts = read_from_shared_memory(space, memory, n=2)
    assert isinstance(texts, SharedTexts) and len(texts) == 2
    write_to_shared_memory(space, 0, "Café — “apple 1”…\n\tend", memory)
    write_to_shared_memory(space, 1, "x" * MAX_OBSERVATION_LENGTH, memory)
    assert texts[0] == "Café — “apple 1”…\n\tend" and texts[1] == "x" * MAX_OBSERVATION_LENGTH
    snapshot = copy.deepcopy(texts)
    write_to_shared_memory(space, 0, "later", memory)
    assert type(snapshot) is tuple and snapshot[0].startswith("Café") and texts[:1] == ("later",)


def test_async_vector_env_without_copies_matches_sync():
    def run(mode, **vector_kwargs):
        envs = gym.make_vec(
            "prm_gym/ALFWorld-v0", num_envs=2, vectorization_mode=mode, vector_kwargs=vector_kwargs, split="tiny"
        )
        obs, infos = envs.reset(seed=5)
        out = [tuple(obs)]
        for _ in range(3):
            obs, *_, infos = envs.step(tuple(commands[0] for commands in infos["admissible_commands"]))
            out.append(tuple(obs))
        envs.close()
        return out

    assert run("sync") == run("async", copy=False) == run("async")


#: Texts Gymnasium's own Text shared memory cannot hold: outside the charset, lone surrogates, longer than the slot.
EXOTIC_TEXTS = [
    "Brand™ 🙂 שלום e\u0301 \u2028 \x00 end",
    "go to \ud800 and \udfff",
    "",
    "y" * 100_000,
    "short again",
    "🙂" * 9,
]


def test_every_string_is_a_member_and_samples_stay_in_the_charset():
    space = GameText(max_length=8, min_length=0, charset="ab")
    assert all(space.contains(text) for text in EXOTIC_TEXTS)
    assert not space.contains(b"bytes") and not space.contains(None)
    assert not GameText(max_length=8, min_length=1).contains("")
    space.seed(0)
    assert all(set(space.sample()) <= set("ab") and len(space.sample()) <= 8 for _ in range(20))


def test_shared_memory_holds_any_string_exactly():
    space = GameText(max_length=8, charset="ab")
    memory = create_shared_memory(space, n=2)
    texts = read_from_shared_memory(space, memory, n=2)
    for text in EXOTIC_TEXTS:
        write_to_shared_memory(space, 0, text, memory)
        write_to_shared_memory(space, 1, text[::-1], memory)
        assert texts[0] == text and texts[1] == text[::-1] and texts[-1] == text[::-1]
    # Two long texts written before a read: the later one is read.
    write_to_shared_memory(space, 0, "first long text", memory)
    write_to_shared_memory(space, 0, "second long text", memory)
    assert texts[0] == "second long text" and copy.deepcopy(texts)[0] == "second long text"


class EchoEngine(FastALFWorldEngine):
    """ALFWorld's fast engine, except that a step's feedback is the command itself."""

    def step(self, command: str) -> GameTurn:
        return dataclasses.replace(super().step(command), feedback=command)


def make_echo_env() -> TextGameEnv:
    return TextGameEnv(list_games("tiny"), engine=EchoEngine())


@pytest.mark.timeout(300)
@pytest.mark.parametrize("context", [None, "spawn"])  # spawn: the slots are pickled into fresh processes
def test_async_vector_env_returns_any_observation_exactly(context):
    envs = gym.vector.AsyncVectorEnv([make_echo_env, make_echo_env], context=context)
    try:
        envs.reset(seed=0)
        for text in EXOTIC_TEXTS:
            obs, *_ = envs.step((text, text[:3]))
            assert obs == (text, text[:3]) and envs.observation_space.contains(obs)
    finally:
        envs.close()
