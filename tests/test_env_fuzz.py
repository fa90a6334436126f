"""Fuzzing both games with garbage actions through sync and async vector envs: nothing breaks, the game plays on.

Seeded (``random.Random(0)``), so a failure reproduces. Actions: random strings over exotic characters (control
characters and NUL, emoji, right-to-left text, line and paragraph separators, lone surrogates, combining marks),
very long strings, and values that are not strings at all.
"""

import random

import gymnasium as gym
import numpy as np
import pytest

import prm_gym  # noqa: F401  (registers the environments)
from prm_gym.envs.vector import sub_env_info

#: Characters the random actions are made of.
ALPHABET = (
    "abcdefghijklmnopqrstuvwxyz ABC 0123456789 .,;:!?'\"()[]{}<>/\\|@#$%^&*-_=+~`"
    "\x00\x01\x07\x08\t\n\r\x1b\x7f"
    "\u00e9\u00df\u00f1\u2122\u20ac\u00a0"
    "\U0001f642\U0001f600\U0001f1eb\U0001f1f7\u200d\ufe0f"
    "\u05e9\u05dc\u05d5\u05dd\u0645\u0631\u062d\u0628\u0627\u202e\u202d\u200f"
    "\u2028\u2029\u0085\ufeff\u200b"
    "\ud800\udbff\udc00\udfff"
    "\u0301\u0308\u0336\u20dd"
    "\u4e2d\u6587\u0416\u03a9"
)
NON_STRINGS = [None, 3, -1, 2.5, True, b"look", bytearray(b"go"), ["look"], ("look",), {"look": 1}, np.int64(2)]
BASE_KEYS = {"admissible_commands", "game_file", "won", "lost", "score", "invalid_action", "task"}

GAMES = {
    "alfworld-fast": ("prm_gym/ALFWorld-v0", {"split": "tiny", "task_types": "look"}),
    "alfworld-textworld": ("prm_gym/ALFWorld-v0", {"split": "tiny", "task_types": "look", "backend": "textworld"}),
    "textworld": ("prm_gym/TextWorld-v0", {}),
}


def fuzz_actions(rng: random.Random, count: int) -> list[object]:
    """Random garbage commands, with long ones and non-strings mixed in."""
    actions: list[object] = ["", "   ", "\u2028", "x" * 100_000, "\ud800" * 5_000, "go to " + "\u0301" * 300]
    actions += NON_STRINGS
    while len(actions) < count:
        actions.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 300))))
    rng.shuffle(actions)
    return actions


def check_step(envs, obs, infos, extra_keys):
    assert isinstance(obs, tuple) and envs.observation_space.contains(obs)
    for index, text in enumerate(obs):
        assert isinstance(text, str) and envs.single_observation_space.contains(text)
        assert BASE_KEYS | extra_keys <= set(sub_env_info(infos, index))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("game", list(GAMES))
def test_garbage_actions_break_nothing_and_the_game_still_wins(game, mode, request):
    env_id, kwargs = GAMES[game]
    if env_id == "prm_gym/TextWorld-v0":
        kwargs = {"game_files": str(request.getfixturevalue("generated_game"))}
    extra_keys = {"task_type"} if env_id == "prm_gym/ALFWorld-v0" else {"max_score"}
    envs = gym.make_vec(env_id, num_envs=2, vectorization_mode=mode, privileged=("walkthrough",), **kwargs)
    try:
        obs, infos = envs.reset(seed=0)
        check_step(envs, obs, infos, extra_keys | {"walkthrough"})
        rng = random.Random(0)
        actions = fuzz_actions(rng, 40)
        for first, second in zip(actions, reversed(actions), strict=True):
            obs, rewards, terminated, truncated, infos = envs.step((first, second))
            check_step(envs, obs, infos, extra_keys)
            assert rewards.dtype.kind == "f" and np.isfinite(rewards).all()
        # The envs still play: the walkthrough wins from a fresh reset of the same game.
        obs, infos = envs.reset(seed=1, options={"game": 0})
        walkthrough = list(infos["walkthrough"][0])
        assert walkthrough and list(infos["walkthrough"][1]) == walkthrough
        for command in walkthrough:
            obs, rewards, terminated, truncated, infos = envs.step((command, command))
            check_step(envs, obs, infos, extra_keys)
        assert terminated.all() and infos["won"].all() and (rewards > 0).all()
    finally:
        envs.close()
