"""The InversePRM loop end to end in miniature (tiny games, tiny random models): every stage, resume, the commands."""

import json

import pytest

torch = pytest.importorskip("torch")

from conftest import write_miniature_loop  # noqa: E402

from prm_gym.cli import main  # noqa: E402
from prm_gym.config_files import load_config  # noqa: E402
from prm_gym.loops import ImprovementConfig, InversePRMConfig  # noqa: E402
from prm_gym.loops import inverse_prm as loop  # noqa: E402
from prm_gym.loops.stages import LOOP_FILE  # noqa: E402
from prm_gym.policy.sft_config import SFTConfig  # noqa: E402
from prm_gym.prm.inverse import load_transitions  # noqa: E402
from prm_gym.rollout import load_episodes  # noqa: E402


def write_settings(tmp_path, loop_models, loop_demonstrations):
    rollouts = 'split = "tiny"\nnum_games = 2\nrepeats = 1\nnum_envs = 2\nvectorization = "sync"\n' \
               'max_episode_steps = 4\n'
    return write_miniature_loop(tmp_path / "run.toml", loop_models, top=f'demonstrations = "{loop_demonstrations}"\n',
                                tables={"transitions": "max_expert_transitions = 6\nmax_policy_transitions = 6\n",
                                        "improvement.rollouts": rollouts})  # fmt: skip


def test_the_loop_runs_every_stage_and_a_rerun_does_nothing_again(
    tmp_path, loop_models, loop_demonstrations, monkeypatch, capsys
):  # fmt: skip
    settings = write_settings(tmp_path, loop_models, loop_demonstrations)
    run = tmp_path / "run"
    assert main(["inverse-prm", "--config", str(settings), "--output-dir", str(run)]) == 0
    assert f"Run folder: {run}" in capsys.readouterr().out
    record = json.loads((run / LOOP_FILE).read_text())
    assert list(record["finished"]) == [
        "pi0", "eval pi0 seed 0", "rollouts of pi0", "transitions for iq0", "iq0", "eval best-of-2(pi0, iq0) seed 0",
        "best-of-n episodes for pi1", "pi1", "eval pi1 seed 0", "eval best-of-2(pi1, iq0) seed 0",
    ]  # fmt: skip
    # pi0 was fine-tuned on the demonstrations; IQ0 trained on them against pi0's own transitions.
    assert record["finished"]["pi0"] == str(run / "pi0" / "model")
    transitions = load_transitions(run / "transitions-iq0")
    assert sum(t.expert for t in transitions) == 6 and sum(not t.expert for t in transitions) == 6
    assert {t.source for t in transitions if not t.expert} == {"rollouts-pi0"}
    trained = json.loads((run / "iq0" / "model" / "training.json").read_text())
    assert trained["train_inverse_prm"]["gamma"] == 0.95 and trained["transitions"]["counts"] == {"expert": 6,
                                                                                                 "policy": 6}
    # pi1 is pi0 fine-tuned on every Best-of-N episode, won or not (InversePRM reads no outcome).
    improvement = load_episodes(run / "improve-pi1")
    pi1 = json.loads((run / "pi1" / "model" / "training.json").read_text())
    assert pi1["sft"]["won_only"] is False and pi1["sft"]["model"] == record["finished"]["pi0"]
    assert pi1["examples"] >= len(improvement) == 2  # one per episode, or per turn where a render is cut
    report = json.loads((run / "report" / "report.json").read_text())
    assert len(report["rows"]) == 4 and "Best-of-2(pi0, iq0)" in [row["label"] for row in report["rows"]]

    # A rerun with the same settings finds every stage done and runs none of them.
    def no_stage(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    for name in ("pi0", "rollouts", "transitions", "inverse_prm", "improvement_episodes", "fine_tune", "_evaluate"):
        monkeypatch.setattr(loop._Stages, name, no_stage)
    assert main(["inverse-prm", "--config", str(settings), "--output-dir", str(run)]) == 0


def test_a_crashed_loop_resumes_and_a_second_iteration_pairs_against_every_past_policy(
    tmp_path, loop_models, loop_demonstrations, monkeypatch
):
    config = load_config(write_settings(tmp_path, loop_models, loop_demonstrations), InversePRMConfig)
    config.output_dir = str(tmp_path / "run")
    config.improvement = ImprovementConfig(method="none")
    config.best_of_n = (1,)
    real = loop._Stages.inverse_prm

    def crash(self, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop._Stages, "inverse_prm", crash)
    with pytest.raises(KeyboardInterrupt):
        loop.run_inverse_prm(config, progress=False)
    finished = json.loads((tmp_path / "run" / LOOP_FILE).read_text())["finished"]
    assert list(finished) == ["pi0", "eval pi0 seed 0", "rollouts of pi0", "transitions for iq0"]
    monkeypatch.setattr(loop._Stages, "inverse_prm", real)
    loop.run_inverse_prm(config, progress=False)
    finished = json.loads((tmp_path / "run" / LOOP_FILE).read_text())["finished"]
    assert list(finished)[4:] == ["iq0", "eval best-of-1(pi0, iq0) seed 0"]


def test_settings_that_would_read_an_outcome_are_refused():
    with pytest.raises(ValueError, match="InversePRM reads no outcome: `improvement.episodes` must be 'all'"):
        InversePRMConfig(improvement=ImprovementConfig(episodes="won"))
    with pytest.raises(ValueError, match="`sft.demonstrations` is set by the loop"):
        InversePRMConfig(sft=SFTConfig(demonstrations="elsewhere"))
    assert InversePRMConfig(improvement=ImprovementConfig(method="dpo", episodes="won")).improvement.method == "dpo"


def test_the_commands_make_transitions_and_train_an_inverse_prm(tmp_path, loop_models, loop_demonstrations, capsys):
    rollouts = tmp_path / "rollouts"
    assert main(["collect", "--agent", "random", "--split", "tiny", "--num-games", "2", "--repeats", "2",
                 "--num-envs", "1", "--vectorization", "sync", "--max-episode-steps", "5",
                 "--output-dir", str(rollouts)]) == 0  # fmt: skip
    assert main(["transitions", "--demonstrations", str(loop_demonstrations), "--rollouts", str(rollouts),
                 "--next-actions.agent", "random", "--output-dir", str(tmp_path / "transitions")]) == 0  # fmt: skip
    assert "expert ones (2 games)" in capsys.readouterr().out
    assert main(["train-inverse-prm", "--transitions", str(tmp_path / "transitions"), "--model",
                 str(loop_models / "prm"), "--max-steps", "2", "--validation-fraction", "0", "--device", "cpu",
                 "--max-prompt-tokens", "512", "--output-dir", str(tmp_path / "iq")]) == 0  # fmt: skip
    assert f"Trained InversePRM saved to {tmp_path / 'iq' / 'model'}" in capsys.readouterr().out
    assert main(["train-inverse-prm", "--transitions", str(tmp_path / "missing"), "--model", str(loop_models / "prm"),
                 "--output-dir", str(tmp_path / "iq2")]) == 2  # fmt: skip
    assert "No transitions at" in capsys.readouterr().err


def test_the_shipped_cpu_config_loads():
    from pathlib import Path

    config = load_config(Path(__file__).parents[1] / "configs" / "inverse_prm_cpu.toml", InversePRMConfig)
    assert config.policy == "runs/agentprm-cpu/pi0/model" and config.demonstrations == "runs/demos"
    assert config.improvement.episodes == "all" and config.evaluation.split == "valid_unseen"


def test_transitions_refuse_two_rollouts_folders_of_one_name(tmp_path, loop_demonstrations, capsys):
    for parent in ("a", "b"):
        assert main(["collect", "--agent", "random", "--split", "tiny", "--num-games", "1", "--repeats", "1",
                     "--num-envs", "1", "--vectorization", "sync", "--max-episode-steps", "3",
                     "--output-dir", str(tmp_path / parent / "rollouts")]) == 0  # fmt: skip
    assert main(["transitions", "--demonstrations", str(loop_demonstrations), "--rollouts",
                 str(tmp_path / "a" / "rollouts"), str(tmp_path / "b" / "rollouts"),
                 "--output-dir", str(tmp_path / "transitions")]) == 2  # fmt: skip
    assert "share names" in capsys.readouterr().err
