"""The Text space's round trip through AsyncVectorEnv's shared memory."""

import copy

import gymnasium as gym
from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

import prm_gym  # noqa: F401  (registers the environments)
from prm_gym.envs.spaces import GameText, SharedTexts
from prm_gym.envs.text_game_env import MAX_OBSERVATION_LENGTH, TEXT_CHARSET


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
