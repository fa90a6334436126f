import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import prm_gym  # noqa: F401  (registers the environments)


@pytest.fixture(scope="session")
def generated_game(tmp_path_factory) -> Path:
    """A game made by TextWorld's own generator (tw-make compiles it offline with the Inform 7 in its wheel)."""
    tw_make = shutil.which("tw-make") or str(Path(sys.executable).parent / "tw-make")
    game = tmp_path_factory.mktemp("tw") / "quest.z8"
    subprocess.run(
        [tw_make, "custom", "--world-size", "3", "--nb-objects", "6", "--quest-length", "3", "--seed", "7",
         "--output", str(game), "--silent"],
        check=True,
    )
    return game


def test_walkthrough_wins_with_score_rewards(generated_game):
    env = gym.make("prm_gym/TextWorld-v0", game_files=str(generated_game))
    obs, info = env.reset(seed=0)
    assert info["walkthrough"] and info["max_score"] >= 1 and info["task"] and info["task"] in obs
    assert info["admissible_commands"] == sorted(set(info["admissible_commands"]))
    total = 0.0
    for command in info["walkthrough"]:
        assert command in info["admissible_commands"]
        obs, reward, terminated, truncated, info = env.step(command)
        assert not info["invalid_action"]
        total += reward
    assert terminated and not truncated and info["won"] and not info["lost"]
    assert total == info["score"] == info["max_score"]


def test_inadmissible_commands_reach_the_parser_and_are_flagged(generated_game):
    env = gym.make("prm_gym/TextWorld-v0", game_files=[generated_game])
    env.reset(seed=0)
    for command in ["xyzzy", "", "take the moon " + "é" * 120, "look\\nlook"]:
        obs, reward, terminated, _, info = env.step(command)
        assert info["invalid_action"] and reward == 0.0 and not terminated and isinstance(obs, str)


def test_passes_the_env_checker(generated_game):
    check_env(gym.make("prm_gym/TextWorld-v0", game_files=str(generated_game)).unwrapped, skip_render_check=True)


def test_plays_alfworld_game_files_too(alfworld_data_dir):
    game = next((alfworld_data_dir / "json_2.1.1/valid_seen").glob("*/*/game.tw-pddl"))
    _, info = gym.make("prm_gym/TextWorld-v0", game_files=str(game)).reset(seed=0)
    assert info["walkthrough"] and info["game_file"] == str(game)


def test_missing_game_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.z8"):
        gym.make("prm_gym/TextWorld-v0", game_files=str(tmp_path / "nope.z8"))
