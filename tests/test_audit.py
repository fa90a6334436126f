"""`prm-gym audit-prm`: reward models' scores of played actions beside the returns that followed them."""

import json

import pytest

torch = pytest.importorskip("torch")

from conftest import tiny_prm  # noqa: E402

from prm_gym.agents import RandomAgent  # noqa: E402
from prm_gym.cli import main  # noqa: E402
from prm_gym.prm import ProcessRewardModel  # noqa: E402
from prm_gym.prm.audit import AuditConfig, audit_prms, episode_scores  # noqa: E402
from prm_gym.prm.targets import TargetsConfig, compute_targets  # noqa: E402
from prm_gym.rollout import load_episodes  # noqa: E402
from prm_gym.rollout.collect import CollectConfig, collect_rollouts  # noqa: E402


@pytest.fixture(scope="module")
def random_episodes(tmp_path_factory):
    config = CollectConfig(split="tiny", num_games=2, repeats=2, num_envs=2, vectorization="sync",
                           max_episode_steps=6, output_dir=str(tmp_path_factory.mktemp("random")))  # fmt: skip
    return collect_rollouts(RandomAgent(), config, progress=False)


@pytest.fixture(scope="module")
def reward_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prms")
    for seed in (0, 1):
        tiny_prm(seed=seed).save_pretrained(folder / f"q{seed}")
    return folder


def test_every_model_scores_every_folder_turn_by_turn_as_full_forwards_would(
    random_episodes, loop_demonstrations, reward_models, tmp_path
):
    config = AuditConfig(runs=(f"{loop_demonstrations}=expert", f"{random_episodes}=random"),
                         reward_models=(f"{reward_models / 'q0'}=Q0", f"{reward_models / 'q1'}=Q1"),
                         output_dir=str(tmp_path / "audit"), device="cpu")  # fmt: skip
    rows = audit_prms(config, progress=False)
    assert [(row.reward_model, row.run) for row in rows] == [
        ("Q0", "expert"), ("Q0", "random"), ("Q1", "expert"), ("Q1", "random")
    ]  # fmt: skip

    expert, random = rows[0], rows[1]
    assert expert.success == 100.0 and expert.episodes == 2
    assert expert.metrics["auc"] is None  # every action led to a win: nothing to rank
    assert expert.mean_q > random.mean_q  # won episodes' returns beat random play's

    # One forward per episode scores each (state, action) as a full forward of its own context would (one
    # batch, no sharing), within bf16's rounding.
    episodes = load_episodes(random_episodes)
    targets = compute_targets(episodes)
    full = ProcessRewardModel.from_pretrained(reward_models / "q1", device="cpu", shared_prefix=False)
    expected = full.score([t.context for t in targets])
    assert rows[3].actions == len(targets)
    assert rows[3].mean_score == pytest.approx(sum(expected) / len(targets), abs=2e-3)
    assert episode_scores(full, episodes, targets, TargetsConfig()) == pytest.approx(expected, abs=1e-2)

    table = (tmp_path / "audit" / "audit.md").read_text()
    assert "| Q0 | random | 4 |" in table and "undefined" in table
    record = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert record["folders"] == {"expert": str(loop_demonstrations), "random": str(random_episodes)}
    assert record["targets"]["gamma"] == 0.95 and len(record["rows"]) == 4
    assert (tmp_path / "audit" / "audit.png").read_bytes()[1:4] == b"PNG"


def test_bad_input_is_one_clear_error(random_episodes, reward_models, tmp_path, capsys):
    assert main(["audit-prm", str(random_episodes), "--output-dir", str(tmp_path)]) == 2
    assert "Give episode folders (positional) and --reward-models" in capsys.readouterr().err
    assert main(["audit-prm", str(random_episodes), "--reward-models", str(tmp_path / "none"),
                 "--output-dir", str(tmp_path)]) == 2  # fmt: skip
    assert f"No reward model at {tmp_path / 'none'}" in capsys.readouterr().err
    assert main(["audit-prm", f"{random_episodes}=a", f"{random_episodes}=a", "--reward-models",
                 str(reward_models / "q0"), "--output-dir", str(tmp_path)]) == 2  # fmt: skip
    assert "Two folders are named 'a'" in capsys.readouterr().err
    assert not list(tmp_path.glob("audit.*"))  # nothing written


def test_the_cli_prints_the_table(random_episodes, reward_models, tmp_path, capsys):
    out_dir = tmp_path / "audit"
    assert main(["audit-prm", f"{random_episodes}=random", "--reward-models", f"{reward_models / 'q0'}=Q0",
                 "--device", "cpu", "--output-dir", str(out_dir)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "| Q0 | random | 4 |" in out and f"Wrote {out_dir}: audit.md, audit.json, audit.png" in out
