"""The bundled ``tiny`` split: winnable by its walkthroughs, one game per task type, reproducible from ALFWorld."""

import re
from pathlib import Path

import gymnasium as gym
import pytest

import prm_gym  # noqa: F401  (registers the environments)
from prm_gym.envs.alfworld.data import list_games
from prm_gym.envs.alfworld.tasks import TASK_TYPES, task_type_of_game_dir
from prm_gym.envs.alfworld.tiny import generate_tiny_split

TINY_DIR = Path(prm_gym.envs.alfworld.data.__file__).parent / "tiny_games"
TINY_GAMES = list_games("tiny")


@pytest.fixture(scope="module")
def env():
    env = gym.make("prm_gym/ALFWorld-v0", split="tiny", max_episode_steps=50, privileged=("walkthrough",))
    yield env
    env.close()


@pytest.mark.parametrize("game", TINY_GAMES, ids=lambda p: p.parent.parent.name)
def test_walkthrough_wins_exactly_at_its_last_step(env, game):
    obs, info = env.reset(options={"game": str(game)})
    walkthrough = info["walkthrough"]
    assert walkthrough and info["game_file"] == str(game)
    room = next(line for line in obs.splitlines() if "you see" in line)
    assert 3 <= len(re.findall(r"\b[a-z]+ \d+\b", room)) <= 6, room
    for step, command in enumerate(walkthrough, start=1):
        assert command in info["admissible_commands"]
        obs, reward, terminated, truncated, info = env.step(command)
        last = step == len(walkthrough)
        assert (reward, terminated, info["won"]) == ((1.0, True, True) if last else (0.0, False, False)), command
        assert not truncated


def test_every_task_type_is_present_once():
    task_types = [task_type_of_game_dir(game.parent.parent.name).name for game in TINY_GAMES]
    assert sorted(task_types) == sorted(t.name for t in TASK_TYPES.values())


def test_generator_reproduces_the_bundled_games(alfworld_data_dir, tmp_path):
    written = generate_tiny_split(alfworld_data_dir, "valid_train", tmp_path)
    bundled = sorted(p.relative_to(TINY_DIR) for p in TINY_DIR.glob("*/*/game.tw-pddl"))
    assert sorted(p.relative_to(tmp_path) for p in written) == bundled
    for relative in bundled:
        assert (tmp_path / relative).read_bytes() == (TINY_DIR / relative).read_bytes(), relative
