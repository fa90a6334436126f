"""Resuming an evaluation folder: what must resume (moved folder, another device), what is refused, and how."""

import dataclasses
import fcntl
import json
import shutil

import pytest

from prm_gym.agents import Decision, RandomAgent, WalkthroughAgent
from prm_gym.cli import main
from prm_gym.evaluation import EvalConfig, evaluate


class ReasoningWalkthrough(WalkthroughAgent):
    """The walkthrough, with a reason that holds every Unicode line separator JSON leaves unescaped."""

    name = "reasoning-walkthrough"

    def decide(self, contexts):
        return [Decision(d.action, "step\u2028then\u2029next\u0085done") for d in super().decide(contexts)]


def _lines(folder):
    return (folder / "episodes.jsonl").read_bytes().count(b"\n")


def _error(capsys, *args: str) -> tuple[int, list[str]]:
    """Run `prm-gym eval ARGS` in this process; return its exit status and its lines on stderr."""
    status = main(["eval", *args])
    return status, capsys.readouterr().err.strip().splitlines()


def test_reasons_with_unicode_line_separators_resume(tmp_path):
    config = EvalConfig(agent="walkthrough", split="tiny", output_dir=str(tmp_path))
    whole = evaluate(ReasoningWalkthrough(), config, progress=False)
    assert "\u2028" in (tmp_path / "episodes.jsonl").read_text(encoding="utf-8")
    assert evaluate(ReasoningWalkthrough(), config, progress=False) == whole
    assert _lines(tmp_path) == sum(len(episode.steps) for episode in whole)  # nothing replayed


def test_a_moved_folder_and_another_device_or_data_dir_spelling_resume(tmp_path, alfworld_data_dir):
    first = tmp_path / "first"
    config = EvalConfig(agent="random", split="valid_unseen", num_games=2, max_episode_steps=3,
                        output_dir=str(first), device="cpu", data_dir=str(alfworld_data_dir))
    whole = evaluate(RandomAgent(0), config, progress=False)
    moved = tmp_path / "moved"
    shutil.move(first, moved)
    again = dataclasses.replace(config, output_dir=str(moved), device="auto", data_dir=None)
    assert evaluate(RandomAgent(0), again, progress=False) == whole
    assert _lines(moved) == 2 * 3  # nothing replayed


def test_a_refused_resume_names_each_differing_setting_and_the_remedy(tmp_path, capsys):
    folder = str(tmp_path)
    assert main(["eval", "--agent", "walkthrough", "--split", "tiny", "--num-games", "1", "--output-dir", folder]) == 0
    capsys.readouterr()
    status, err = _error(capsys, "--agent", "random", "--split", "tiny", "--num-games", "2", "--hf.temperature",
                         "0.5", "--output-dir", folder)
    assert status == 2 and err == [
        f"prm-gym: error: {tmp_path} holds another run (num_games: 1 there, 2 here; agent: 'walkthrough' there, "
        "'random' here; hf.temperature: 0.0 there, 0.5 here; agent name: 'walkthrough' there, 'random' here): "
        "choose another output_dir, or the same settings to resume it."
    ]


def test_episodes_of_other_games_are_refused(tmp_path):
    config = EvalConfig(agent="walkthrough", split="tiny", num_games=2, output_dir=str(tmp_path))
    evaluate(WalkthroughAgent(), config, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    for row in rows:
        row["game_file"] = row["game_file"].replace("trial_", "other_trial_")
    (tmp_path / "episodes.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(ValueError, match="episode '0:0' was played on .*other_trial_.*the games differ"):
        evaluate(WalkthroughAgent(), config, progress=False)


def test_a_folder_being_written_by_another_evaluation_is_refused(tmp_path, capsys):
    with open(tmp_path / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running evaluation holds it
        status, err = _error(capsys, "--agent", "walkthrough", "--split", "tiny", "--output-dir", str(tmp_path))
    assert status == 2 and err == [
        f"prm-gym: error: {tmp_path} is being written by another run; wait for it to end, or choose another "
        "output_dir."
    ]
    assert not (tmp_path / "episodes.jsonl").exists()


@pytest.mark.parametrize("num_games", ["0", "-1"])
def test_num_games_below_1_is_refused(capsys, num_games):
    with pytest.raises(SystemExit) as exit_status:  # tyro checks the flags: one box, exit status 2
        main(["eval", "--agent", "walkthrough", "--split", "tiny", "--num-games", num_games])
    assert exit_status.value.code == 2
    message = " ".join(capsys.readouterr().err.split())  # the box wraps long lines
    assert f"`num_games` should be at least 1 (or unset for all games). Received {num_games}." in message


def test_task_types_that_select_no_game_are_one_clear_line(tmp_path, capsys):
    game = tmp_path / "json_2.1.1/valid_unseen/pick_and_place_simple-A-None-B-1/t1"
    game.mkdir(parents=True)
    (game / "game.tw-pddl").write_text(json.dumps({"solvable": True}))
    status, err = _error(capsys, "--agent", "walkthrough", "--task-types", "Look", "--data-dir", str(tmp_path))
    assert status == 2 and len(err) == 1
    assert err[0].startswith("prm-gym: error: No solvable games of task types ['look_at_obj_in_light'] in ")


@pytest.mark.parametrize(("content", "problem"), [(b"{bad", "is not valid JSON"), (b"[]", "holds a JSON list")])
def test_a_damaged_config_json_is_one_line_naming_it(tmp_path, capsys, content, problem):
    (tmp_path / "config.json").write_bytes(content)
    status, err = _error(capsys, "--agent", "walkthrough", "--split", "tiny", "--output-dir", str(tmp_path))
    assert status == 2 and len(err) == 1
    assert err[0].startswith(f"prm-gym: error: {tmp_path / 'config.json'} {problem}")
    assert err[0].endswith("Write the run into a new output_dir.")


def test_a_damaged_byte_in_episodes_is_one_line_naming_the_line(tmp_path, capsys):
    args = ("--agent", "walkthrough", "--split", "tiny", "--output-dir", str(tmp_path))
    assert main(["eval", *args]) == 0
    episodes = tmp_path / "episodes.jsonl"
    lines = episodes.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b'"won"', b'"w\xffn"')
    episodes.write_bytes(b"\n".join(lines))
    byte = lines[2].index(b"\xff") + 1
    capsys.readouterr()
    status, err = _error(capsys, *args)
    assert status == 2 and err == [
        f"prm-gym: error: Line 3 of {episodes} is not UTF-8 text (byte {byte}): the file was damaged."
    ]


def test_episodes_without_config_are_refused(tmp_path):
    (tmp_path / "episodes.jsonl").write_text("")
    with pytest.raises(ValueError, match="episodes.jsonl exists without config.json"):
        evaluate(WalkthroughAgent(), EvalConfig(split="tiny", output_dir=str(tmp_path)), progress=False)
