"""Whole-split sweeps on the real games: the expert wins every game within the cap, random play never crashes."""

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from prm_gym.agents import ExpertAgent, RandomAgent
from prm_gym.envs.alfworld import TASK_TYPES
from prm_gym.evaluation import EvalConfig, evaluate


@pytest.mark.parametrize("task_type", [t.label for t in TASK_TYPES.values()])
@pytest.mark.parametrize("split", ["valid_unseen", "valid_seen"])
def test_expert_wins_every_game_within_the_cap(alfworld_data_dir, split, task_type):
    config = EvalConfig(split=split, task_types=(task_type,), max_episode_steps=30)
    results = evaluate(ExpertAgent(), config, progress=False)
    assert results
    lost = [r.game_file for r in results if not r.won]
    assert not lost, f"games the expert does not win in 30 steps: {lost}"
    # It never needed its planner: every episode is the game's own gold walkthrough, which wins at its last step.
    assert all(r.actions == json.loads(Path(r.game_file).read_text())["walkthrough"] for r in results)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_play_on_25_train_games_never_crashes(alfworld_data_dir, seed):
    env = gym.make("prm_gym/ALFWorld-v0", split="train")
    agent, rng = RandomAgent(seed=seed), np.random.default_rng(seed)
    env.action_space.seed(seed)
    games, steps = set(), 0
    for episode in range(25):
        obs, info = env.reset(seed=seed if episode == 0 else None)
        games.add(info["game_file"])
        done = False
        while not done:
            # One command in ten is garbage from the action space, which must read "Nothing happens."
            command = env.action_space.sample() if rng.random() < 0.1 else agent.act(obs, info)
            admissible = info["admissible_commands"]
            obs, reward, terminated, truncated, info = env.step(command)
            assert isinstance(obs, str) and obs and reward in (0.0, 1.0)
            assert info["invalid_action"] == (command.strip() not in admissible)
            if info["invalid_action"]:
                assert obs == "Nothing happens."
            done, steps = terminated or truncated, steps + 1
    assert len(games) == 25 and steps > 25 * 20

