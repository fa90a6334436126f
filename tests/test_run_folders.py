"""Rollouts and targets folders on the command line: what prm-gym wrote reads back, damage is one clear line."""

import pytest

from prm_gym.agents import Decision, WalkthroughAgent
from prm_gym.cli import main
from prm_gym.rollout import CollectConfig, collect_rollouts
from prm_gym.rollout.storage import load_episodes

COLLECT = ("--agent", "walkthrough", "--split", "tiny", "--repeats", "1", "--num-envs", "1", "--vectorization", "sync")


class ReasoningWalkthrough(WalkthroughAgent):
    """The walkthrough, with a reason that holds the Unicode line separators JSON leaves unescaped."""

    def decide(self, contexts):
        return [Decision(d.action, "go\u2028on\u2029then\u0085stop") for d in super().decide(contexts)]


def _run(capsys, *args: str) -> tuple[int, list[str]]:
    """Run `prm-gym ARGS` in this process; return its exit status and its lines on stderr."""
    status = main(list(args))
    return status, capsys.readouterr().err.strip().splitlines()


@pytest.fixture
def rollouts(tmp_path, capsys):
    folder = tmp_path / "rollouts"
    assert main(["collect", *COLLECT, "--output-dir", str(folder)]) == 0
    capsys.readouterr()
    return folder


def test_rollouts_with_unicode_line_separators_read_back(tmp_path):
    config = CollectConfig(split="tiny", repeats=1, num_envs=1, vectorization="sync", output_dir=str(tmp_path))
    collect_rollouts(ReasoningWalkthrough(), config, progress=False)
    episodes = load_episodes(tmp_path)
    assert len(episodes) == 6 and episodes[0].steps[0].context.reason == "go\u2028on\u2029then\u0085stop"
    assert collect_rollouts(ReasoningWalkthrough(), config, progress=False) == tmp_path  # resumes


def test_a_damaged_byte_in_rollouts_is_one_line_naming_the_line(rollouts, tmp_path, capsys):
    file = rollouts / "episodes.jsonl"
    lines = file.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"task"', b'"t\xffsk"')
    file.write_bytes(b"\n".join(lines))
    byte = lines[1].index(b"\xff") + 1
    expected = f"prm-gym: error: Line 2 of {file} is not UTF-8 text (byte {byte}): the file was damaged."
    for args in (["collect", *COLLECT, "--output-dir", str(rollouts)],
                 ["targets", "--rollouts", str(rollouts), "--output-dir", str(tmp_path / "targets")]):
        status, err = _run(capsys, *args)
        assert status == 2 and err == [expected]


def test_a_damaged_rollouts_config_is_one_line_naming_it(rollouts, tmp_path, capsys):
    config = rollouts / "config.json"
    config.write_bytes(b'{"collect": "\xff"}')
    for args in (["collect", *COLLECT, "--output-dir", str(rollouts)],
                 ["targets", "--rollouts", str(rollouts), "--output-dir", str(tmp_path / "targets")]):
        status, err = _run(capsys, *args)
        assert status == 2 and err == [
            f"prm-gym: error: {config} is not UTF-8 text (byte 14): it was damaged or not written by prm-gym. "
            "Write the run into a new output_dir."
        ]


def test_a_damaged_targets_config_is_refused_before_training(rollouts, tmp_path, capsys):
    targets = tmp_path / "targets"
    assert main(["targets", "--rollouts", str(rollouts), "--output-dir", str(targets)]) == 0
    (targets / "config.json").write_text("[]")
    capsys.readouterr()
    status, err = _run(capsys, "train-prm", "--targets", str(targets), "--model", str(tmp_path / "no-model"),
                       "--output-dir", str(tmp_path / "prm"))
    assert status == 2 and err == [
        f"prm-gym: error: {targets / 'config.json'} holds a JSON list, not an object: it was damaged or not written "
        "by prm-gym. Make them again with `prm-gym targets`."
    ]
