"""The prm-gym command line, run as a user runs it: in a subprocess."""

import os
import subprocess
import sys

import pytest


def prm_gym(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "prm_gym.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.mark.parametrize("command", ["data", "eval"])
def test_help(command):
    result = prm_gym(command, "--help")
    assert result.returncode == 0 and "--data-dir" in result.stdout


def test_eval_prints_table_1(alfworld_data_dir):
    result = prm_gym("eval", "--agent", "walkthrough", "--split", "valid_unseen", "--task-types", "Look", "Pick2",
                     "--num-games", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "walkthrough on valid_unseen (3 games, cap 30 steps)"
    assert lines[1].split() == ["All", "Look", "Pick2"]  # 3 games spread over Look's 18 and Pick2's 17
    assert lines[2].split() == ["success", "%", "100.0", "100.0", "100.0"]
    assert lines[4].split() == ["#games", "3", "2", "1"]


def test_unknown_split_is_one_clear_line(alfworld_data_dir):
    result = prm_gym("eval", "--split", "validation")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("prm-gym: error: Unknown ALFWorld split 'validation'")
    assert "Traceback" not in result.stderr


def test_data_without_games_says_what_to_do(tmp_path):
    env = {**os.environ, "PRM_GYM_CACHE": str(tmp_path)}
    env.pop("ALFWORLD_DATA", None)
    result = prm_gym("eval", env=env)
    assert result.returncode == 2 and "prm-gym data" in result.stderr and "Traceback" not in result.stderr


def test_data_unpacks_a_bad_archive_with_a_clear_error(tmp_path):
    bad = tmp_path / "json_2.1.2-tw-pddl.tar.xz"
    bad.write_bytes(b"not an archive")
    result = prm_gym("data", "--archive", str(bad), "--data-dir", str(tmp_path / "out"))
    assert result.returncode == 2 and "sha256 of" in result.stderr and not (tmp_path / "out").exists()


def test_train_prm_help_lists_the_training_and_resume_flags_without_torch():
    result = prm_gym("train-prm", "--help")
    assert result.returncode == 0, result.stderr
    for flag in ("--targets", "--learning-rate", "--save-steps", "--save-total-limit", "--no-resume"):
        assert flag in result.stdout
    imported = subprocess.run(
        [sys.executable, "-c", "import sys, prm_gym.cli, prm_gym.prm.train_config; print('torch' in sys.modules)"],
        capture_output=True, text=True, timeout=600,
    )
    assert imported.stdout.strip() == "False", imported.stderr
