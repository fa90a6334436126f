import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import prm_gym  # noqa: F401  (registers the environments)

# `generated_game` (a small game made by TextWorld's generator) comes from conftest.py.


def test_walkthrough_wins_with_score_rewards(generated_game):
    env = gym.make("prm_gym/TextWorld-v0", game_files=str(generated_game), privileged=("walkthrough",))
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
    _, info = gym.make("prm_gym/TextWorld-v0", game_files=str(game), privileged=("walkthrough",)).reset(seed=0)
    assert info["walkthrough"] and info["game_file"] == str(game)


def test_missing_game_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.z8"):
        gym.make("prm_gym/TextWorld-v0", game_files=str(tmp_path / "nope.z8"))


def corrupt_copies(game: Path, folder: Path) -> dict[str, Path]:
    """Broken copies of a TextWorld game, each with the game's .json beside it (so that TextWorld reads both)."""
    data = game.read_bytes()
    body_flipped = bytearray(data)
    body_flipped[len(data) // 2] ^= 0xFF
    variants = {
        "version0": b"\x00" + data[1:],
        "truncated": data[:1000],
        "garbage": b"garbage",
        "empty": b"",
        "flipped": bytes(body_flipped),
    }
    paths = {}
    for name, content in variants.items():
        paths[name] = folder / f"{name}.z8"
        paths[name].write_bytes(content)
        shutil.copy(game.with_suffix(".json"), paths[name].with_suffix(".json"))
    return paths


def test_corrupt_story_files_raise_a_value_error_naming_them(generated_game, tmp_path):
    # Jericho ends the process on these ("Fatal error: Unknown Z-code version"): check in a child process.
    paths = corrupt_copies(generated_game, tmp_path)
    script = (
        "import sys, gymnasium as gym, prm_gym\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        gym.make('prm_gym/TextWorld-v0', game_files=path).reset(seed=0)\n"
        "        print('PLAYED', path)\n"
        "    except ValueError as error:\n"
        "        print('ValueError', error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *map(str, paths.values())], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(paths)
    for line, path in zip(lines, paths.values(), strict=True):
        assert line.startswith("ValueError") and repr(str(path)) in line


def test_broken_metadata_beside_the_story_is_named(generated_game, tmp_path):
    game = tmp_path / "quest.z8"
    shutil.copy(generated_game, game)
    for metadata in ['{"broken": ', '{"a": 1}']:
        game.with_suffix(".json").write_text(metadata)
        with pytest.raises(ValueError, match="quest.json"):
            gym.make("prm_gym/TextWorld-v0", game_files=game).reset(seed=0)


@pytest.mark.parametrize("name", ["game.ulx", "game.txt", "game.z8.bak"])
def test_formats_textworld_does_not_play_are_refused_at_construction(tmp_path, name):
    (tmp_path / name).write_bytes(b"\x08" * 100)
    with pytest.raises(ValueError, match=name):
        gym.make("prm_gym/TextWorld-v0", game_files=[tmp_path / name])


def test_a_reset_on_a_broken_game_needs_a_reset_then_plays_on(generated_game, tmp_path):
    broken = tmp_path / "broken.z8"  # TextWorld fails on its .json after the loaded game is closed
    shutil.copy(generated_game, broken)
    broken.with_suffix(".json").write_text("{}")
    env = gym.make(
        "prm_gym/TextWorld-v0", game_files=[generated_game, broken], shuffle=False, privileged=("walkthrough",)
    ).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match="broken.z8"):
        env.reset(options={"game": 1})
    with pytest.raises(gym.error.ResetNeeded):
        env.step("look")
    _, info = env.reset(options={"game": 0})
    assert info["walkthrough"]


def test_commands_utf8_cannot_encode_reach_the_parser(generated_game):
    env = gym.make("prm_gym/TextWorld-v0", game_files=generated_game)
    env.reset(seed=0)
    for command in ["go to \ud800", "\udfff", "take \ud83d apple"]:
        obs, reward, terminated, _, info = env.step(command)
        assert isinstance(obs, str) and info["invalid_action"] and not terminated
