"""The AgentPRM loop end to end in miniature (tiny games, tiny random models): every stage, resume, config files."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from conftest import write_miniature_loop  # noqa: E402

from prm_gym.cli import main  # noqa: E402
from prm_gym.loops import AgentPRMConfig, ImprovementConfig  # noqa: E402
from prm_gym.loops import agentprm as loop  # noqa: E402
from prm_gym.loops.stages import LOOP_FILE, in_own_process  # noqa: E402
from prm_gym.policy.dpo_config import DPOSettings  # noqa: E402
from prm_gym.rollout import load_episodes  # noqa: E402


def write_settings(tmp_path, loop_models, loop_demonstrations):
    rollouts = 'split = "tiny"\nnum_games = 2\nrepeats = 2\nexpert_prefix_share = 1.0\nnum_envs = 2\n' \
               'vectorization = "sync"\nmax_episode_steps = 6\n'
    return write_miniature_loop(tmp_path / "run.toml", loop_models, tables={
        "sft": f'demonstrations = "{loop_demonstrations}"\n', "prm": "whole_episodes = true\n",
        "improvement.rollouts": rollouts})  # fmt: skip


def test_the_loop_runs_every_stage_and_a_rerun_does_nothing_again(
    tmp_path, loop_models, loop_demonstrations, monkeypatch, capsys
):
    settings = write_settings(tmp_path, loop_models, loop_demonstrations)
    run = tmp_path / "run"
    assert main(["agentprm", "--config", str(settings), "--output-dir", str(run)]) == 0
    assert f"Run folder: {run}" in capsys.readouterr().out
    record = json.loads((run / LOOP_FILE).read_text())
    stages = list(record["finished"])
    assert stages[:4] == ["pi0", "eval pi0 seed 0", "rollouts of pi0", "targets of pi0"]
    assert stages[4:] == ["q0", "eval best-of-2(pi0, q0) seed 0", "best-of-n episodes for pi1", "pi1",
                          "eval pi1 seed 0", "eval best-of-2(pi1, q0) seed 0"]  # fmt: skip
    # pi0 was fine-tuned on the demonstrations; Q0 trained on pi0's rollouts; the report has every evaluation.
    assert record["finished"]["pi0"] == str(run / "pi0" / "model") and (run / "pi0" / "model").is_dir()
    q0 = json.loads((run / "q0" / "model" / "training.json").read_text())
    assert q0["train_prm"]["whole_episodes"] and q0["train_prm"]["rollouts"] == str(run / "rollouts-pi0")
    rollouts = load_episodes(run / "rollouts-pi0")
    assert len(rollouts) == 4 and {e.agent for e in rollouts} == {"model-loglik"}  # pi0: <folder>-<mode>
    assert json.loads((run / "targets-pi0" / "config.json").read_text())["source"]["config"]["repeats"] == 2
    improvement = load_episodes(run / "improve-pi1")
    assert {e.agent for e in improvement} == {"best-of-2(model-loglik, model)"}
    pi1 = record["finished"]["pi1"]
    if any(e.won for e in improvement):  # pi1 is pi0 fine-tuned on the won Best-of-N episodes
        assert pi1 == str(run / "pi1" / "model") and (run / "pi1" / "model" / "training.json").is_file()
    else:  # nothing to learn from: pi1 is pi0
        assert pi1 == record["finished"]["pi0"]
    report = json.loads((run / "report" / "report.json").read_text())
    assert len(report["rows"]) == 4 and (run / "report" / "report.png").is_file()

    # A rerun with the same settings finds every stage done and runs none of them.
    def no_stage(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    for name in ("pi0", "rollouts", "targets", "prm", "improvement_episodes", "fine_tune", "_evaluate"):
        monkeypatch.setattr(loop._Stages, name, no_stage)
    assert main(["agentprm", "--config", str(settings), "--output-dir", str(run)]) == 0


def test_policy_improvement_fine_tunes_the_policy_on_won_episodes(tmp_path, loop_models, loop_demonstrations):
    """Rejection-sampling fine-tuning: the won episodes (here the walkthroughs) teach the policy their actions."""
    from prm_gym.config_files import load_config
    from prm_gym.loops.stages import LoopRun

    config = load_config(write_settings(tmp_path, loop_models, loop_demonstrations), AgentPRMConfig)
    stages = loop._Stages(config, tmp_path / "run", LoopRun(tmp_path / "run", {}), progress=False)
    pi1 = stages.fine_tune(str(loop_models / "policy"), str(loop_demonstrations), "pi1")
    assert pi1 == str(tmp_path / "run" / "pi1" / "model")
    record = json.loads((tmp_path / "run" / "pi1" / "model" / "training.json").read_text())
    assert record["sft"]["model"] == str(loop_models / "policy") and record["examples"] == 2
    assert record["sft"]["max_steps"] == 2 and record["sft"]["learning_rate"] == 1e-5  # improvement.sft's


def test_a_crashed_loop_resumes_at_its_first_unfinished_stage(
    tmp_path, loop_models, loop_demonstrations, monkeypatch
):
    settings = write_settings(tmp_path, loop_models, loop_demonstrations)
    from prm_gym.config_files import load_config

    loaded = load_config(settings, AgentPRMConfig)
    loaded.output_dir = str(tmp_path / "run")
    # DPO as the policy improvement: pi0's samples at its rollouts' states, ranked by Q0.
    dpo = DPOSettings(max_states=4, min_gap=0.0, max_steps=1, per_device_train_batch_size=2, save_steps=1)
    loaded.improvement = ImprovementConfig(method="dpo", dpo=dpo)
    calls = []
    real_prm = loop._Stages.prm

    def crash(self, *args):
        calls.append("prm")
        raise KeyboardInterrupt

    monkeypatch.setattr(loop._Stages, "prm", crash)
    with pytest.raises(KeyboardInterrupt):
        loop.run_agentprm(loaded, progress=False)
    finished = json.loads((tmp_path / "run" / LOOP_FILE).read_text())["finished"]
    assert list(finished) == ["pi0", "eval pi0 seed 0", "rollouts of pi0", "targets of pi0"]

    def no_stage(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(loop._Stages, "prm", real_prm)
    for name in ("pi0", "rollouts", "targets"):
        monkeypatch.setattr(loop._Stages, name, no_stage)
    loop.run_agentprm(loaded, progress=False)
    finished = json.loads((tmp_path / "run" / LOOP_FILE).read_text())["finished"]
    assert list(finished)[4:] == ["q0", "eval best-of-2(pi0, q0) seed 0", "preference pairs for pi1", "pi1",
                                  "eval pi1 seed 0", "eval best-of-2(pi1, q0) seed 0"]  # fmt: skip
    assert finished["pi1"] == str(tmp_path / "run" / "pi1" / "model")
    pairs = (tmp_path / "run" / "pairs-pi1" / "pairs.jsonl").read_text().splitlines()
    assert 1 <= len(pairs) <= 4 and json.loads((tmp_path / "run" / "pi1" / "model" / "training.json").read_text())[
        "policy"] == finished["pi0"]  # fmt: skip

    # More evaluation seeds only add stages: the finished ones are kept, the new seed's evaluations run; and how
    # the training stages use memory and how often they checkpoint may change (their results would be the same).
    evaluated, real_evaluate = [], loop._Stages._evaluate

    def spy(self, folder, seed, **agent):
        evaluated.append(folder)
        return real_evaluate(self, folder, seed, **agent)

    monkeypatch.setattr(loop._Stages, "_evaluate", spy)
    loaded.eval_seeds = (0, 1)
    loaded.prm.activation_checkpointing = loaded.improvement.dpo.activation_checkpointing = True
    loaded.improvement.sft.save_steps = loaded.prm.logging_steps = 7
    loop.run_agentprm(loaded, progress=False)
    assert evaluated == ["eval/bon2-pi0-q0-s1", "eval/bon2-pi1-q0-s1"]  # greedy policies: the first seed only
    # The same folder with other settings is refused, naming them.
    loaded.targets.gamma = 0.5
    with pytest.raises(ValueError, match=r"other settings \(targets.gamma: 0.95 there, 0.5 here\)"):
        loop.run_agentprm(loaded, progress=False)


def test_training_stages_run_in_a_process_of_their_own_that_reports_a_kill():
    assert in_own_process(os.getpid) != str(os.getpid())  # its memory goes back to the system when it ends
    with pytest.raises(RuntimeError, match="ended without finishing.*Rerun the same command"):
        in_own_process(os._exit, 9)  # as if killed for lack of memory


HOLD_SCRIPT = """
import os, sys, time
from prm_gym.io import atomic_write_text
from prm_gym.loops.stages import in_own_process

def hold(path):
    atomic_write_text(path, str(os.getpid()))
    time.sleep(3600)

if __name__ == "__main__":
    in_own_process(hold, sys.argv[1])
"""


def _eventually(condition):
    """Return whether ``condition()`` holds within two minutes (a bound that catches hangs only)."""
    for _ in range(1200):
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def _running(pid):
    try:  # a process that ended but is not reaped yet (a zombie) has ended too
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads process states from /proc")
def test_a_training_process_ends_when_the_loop_is_killed(tmp_path):
    script, pid_file = tmp_path / "hold.py", tmp_path / "training.pid"
    script.write_text(HOLD_SCRIPT, "utf-8")
    loop_process = subprocess.Popen([sys.executable, str(script), str(pid_file)])
    try:  # the training process writes its pid once it runs
        _eventually(lambda: pid_file.is_file() or loop_process.poll() is not None)
        training = int(pid_file.read_text())
        assert _running(training)
    finally:
        loop_process.kill()  # SIGKILL: no clean-up of its own
        loop_process.wait()
    ended = _eventually(lambda: not _running(training))
    if not ended:
        os.kill(training, signal.SIGKILL)
    assert ended


def test_bad_settings_are_one_clear_error(tmp_path, capsys):
    def error(text, suffix=".toml"):
        path = tmp_path / f"run{suffix}"
        path.write_text(text, "utf-8")
        assert main(["agentprm", "--config", str(path)]) == 2
        return " ".join(capsys.readouterr().err.split())

    assert "Unknown setting `rollouts.repeat`; the settings there are:" in error("[rollouts]\nrepeat = 2\n")
    assert "`rollouts.model` is set by the loop" in error('[rollouts]\nmodel = "x"\n')
    assert "does not parse" in error("[rollouts\n")
    assert "does not parse" in error("rollouts: [1, 2\n", ".yaml")
    assert "`iterations` should be at least 1" in error('{"iterations": 0}', ".json")
    assert main(["agentprm", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "No config file at" in capsys.readouterr().err


def test_a_greedy_policy_is_evaluated_once_best_of_n_once_per_seed(tmp_path, monkeypatch):
    from prm_gym.loops.stages import LoopRun

    played = []
    monkeypatch.setattr(loop._Stages, "_evaluate", lambda self, folder, seed, **agent: played.append(folder) or folder)
    config = AgentPRMConfig(policy="pi0", eval_seeds=(0, 1), best_of_n=(2, 4))
    stages = loop._Stages(config, tmp_path, LoopRun(tmp_path, {}), progress=False)
    assert stages.evaluate_policy("pi0", "pi0") == ["eval/pi0-s0=pi0"]
    assert len(stages.evaluate_best_of_n("pi0", "pi0", "q0", "q0", config.best_of_n)) == 4 and len(played) == 5
    config.hf.temperature = 0.5  # a sampling policy: once per seed
    assert stages.evaluate_policy("pi0", "pi0-sampled") == ["eval/pi0-sampled-s0=pi0-sampled",
                                                            "eval/pi0-sampled-s1=pi0-sampled"]  # fmt: skip


@pytest.mark.parametrize(("improved", "after"),
                         [(None, ["bon2-pi1-q0-s0", "bon4-pi1-q0-s0"]), ((4,), ["bon4-pi1-q0-s0"]), ((), [])])
def test_improved_best_of_n_sets_the_best_of_n_evaluated_after_an_improvement(tmp_path, monkeypatch, improved, after):
    from prm_gym.loops.stages import LoopRun

    played = []
    monkeypatch.setattr(loop._Stages, "_evaluate", lambda self, folder, seed, **agent: played.append(folder) or folder)
    monkeypatch.setattr(loop._Stages, "rollouts", lambda self, policy, folder: folder)
    monkeypatch.setattr(loop._Stages, "reward_model", lambda self, policy, rollouts, previous, i: "q0")
    monkeypatch.setattr(loop._Stages, "improve", lambda self, policy, reward_model, rollouts, i: "pi1")
    monkeypatch.setattr(loop._Stages, "report", lambda self, evaluations: None)
    config = AgentPRMConfig(policy="pi0", best_of_n=(2, 4), improved_best_of_n=improved)
    loop._Stages(config, tmp_path, LoopRun(tmp_path, {}), progress=False).run_loop()
    assert played == ["eval/pi0-s0", "eval/bon2-pi0-q0-s0", "eval/bon4-pi0-q0-s0", "eval/pi1-s0",
                      *(f"eval/{name}" for name in after)]  # fmt: skip
    with pytest.raises(ValueError, match="`improved_best_of_n` should list sizes of at least 1"):
        AgentPRMConfig(improved_best_of_n=(0,))


def test_the_shipped_cpu_config_loads():
    from pathlib import Path

    from prm_gym.config_files import load_config

    config = load_config(Path(__file__).parents[1] / "configs" / "agentprm_cpu.toml", AgentPRMConfig)
    assert config.policy is None and config.sft.demonstrations == "runs/demos"
    assert config.evaluation.split == "valid_unseen" and config.rollouts.expert_prefix_share == 0.5


def test_yaml_and_json_files_give_the_same_settings_as_toml(tmp_path):
    from prm_gym.config_files import load_config

    (tmp_path / "run.yaml").write_text("iterations: 2\nrollouts:\n  repeats: 8\nbest_of_n: [1, 4]\n", "utf-8")
    (tmp_path / "run.json").write_text('{"iterations": 2, "rollouts": {"repeats": 8}, "best_of_n": [1, 4]}', "utf-8")
    (tmp_path / "run.toml").write_text("iterations = 2\nbest_of_n = [1, 4]\n[rollouts]\nrepeats = 8\n", "utf-8")
    configs = [load_config(tmp_path / f"run.{kind}", AgentPRMConfig) for kind in ("yaml", "json", "toml")]
    assert configs[0] == configs[1] == configs[2]
    # A section's loop defaults stay where the file does not set them.
    assert configs[0].rollouts.repeats == 8 and configs[0].rollouts.split == "train"
    assert configs[0].rollouts.expert_prefix_share == 0.5 and configs[0].best_of_n == (1, 4)


def test_a_run_recorded_before_a_setting_existed_resumes_with_its_default(tmp_path):
    """A setting added since a run was recorded counts as its default there (the behaviour the run had)."""
    from prm_gym.loops.stages import LoopRun

    defaults = dataclasses.asdict(AgentPRMConfig())
    old = dataclasses.asdict(AgentPRMConfig())
    del old["improvement"]["episodes"]  # a run recorded before `improvement.episodes` existed
    LoopRun(tmp_path, old).stage("pi0", lambda: "pi0")
    assert LoopRun(tmp_path, dataclasses.asdict(AgentPRMConfig()), defaults=defaults).finished == {"pi0": "pi0"}
    changed = dataclasses.asdict(AgentPRMConfig(improvement=ImprovementConfig(episodes="all")))
    with pytest.raises(ValueError, match=r"improvement.episodes: 'won' there, 'all' here"):
        LoopRun(tmp_path, changed, defaults=defaults)
