"""PRM training on real rollouts of the tiny games: the loss falls and winning actions rank above losing ones."""

import dataclasses
import json

import numpy as np
import pytest
from conftest import tiny_prm

pytest.importorskip("transformers")

from transformers import EvalPrediction  # noqa: E402

from prm_gym.agents import Agent, ExpertAgent, RandomAgent  # noqa: E402
from prm_gym.prm import Context, PromptConfig  # noqa: E402
from prm_gym.prm.targets import TargetRow, TargetsConfig, compute_targets, preference_pairs  # noqa: E402
from prm_gym.prm.training import PRMConfig, PRMTrainer, prm_metrics, split_by_game  # noqa: E402
from prm_gym.rollout.collect import CollectConfig, collect_rollouts  # noqa: E402
from prm_gym.rollout.storage import load_rollouts  # noqa: E402


class Sloppy(Agent):
    """The expert, but one action in two is random: episodes that win and episodes that do not, at shared states."""

    name = "sloppy-expert"

    def __init__(self, seed=0):
        super().__init__()
        self.expert, self.random = ExpertAgent(), RandomAgent(seed)
        self.rng = np.random.default_rng(seed)

    def reset(self, seed=None):
        super().reset(seed)
        self.random.reset(seed)
        self.rng = np.random.default_rng(seed)

    def decide(self, contexts):
        return [(self.expert if self.rng.random() < 0.5 else self.random).decide([c])[0] for c in contexts]


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    config = CollectConfig(split="tiny", num_games=3, repeats=8, num_envs=2, vectorization="sync",
                           max_episode_steps=10, backend="fast", output_dir=str(tmp_path_factory.mktemp("rollouts")))
    episodes = load_rollouts(collect_rollouts(lambda i: Sloppy(i), config, progress=False))
    assert 0 < sum(e.won for e in episodes) < len(episodes)
    rows = compute_targets(episodes, TargetsConfig())
    first_steps = [row for row in rows if not row.context.history]
    assert sum(row.wins for row in first_steps) == sum(e.won for e in episodes)
    assert sum(row.visits for row in first_steps) == len(episodes)
    return rows


#: Short renders, so that a tiny model trains in seconds.
PROMPT = PromptConfig(system_prompt="Reach the goal.", max_prompt_tokens=256, show_admissible_commands=False)


def train_args(tmp_path, **overrides):
    settings = dict(output_dir=str(tmp_path), max_steps=40, learning_rate=3e-3, lr_scheduler_type="constant",
                    per_device_train_batch_size=8, validation_fraction=0.0, logging_steps=10, save_strategy="no",
                    use_cpu=True, bf16=True, seed=0, disable_tqdm=True)
    return PRMConfig(**{**settings, **overrides})


def scores_auc(prm, rows):
    scores = np.array(prm.score([row.context for row in rows]))
    won = np.array([row.success for row in rows])
    pos, neg = scores[won], scores[~won]
    return ((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def test_soft_bce_training_lowers_the_loss_and_ranks_winning_actions_first(targets, tmp_path):
    prm = tiny_prm(prompt_config=PROMPT)
    before = scores_auc(prm, targets)
    trainer = PRMTrainer(prm, train_args(tmp_path), targets)
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses[-1] < losses[0] - 0.05, losses
    after = scores_auc(prm, targets)
    assert after > 0.75 and after > before + 0.2, (before, after)


def test_bradley_terry_on_preference_pairs(targets, tmp_path):
    pairs = preference_pairs(targets, delta=0.2)
    assert pairs
    prm = tiny_prm(prompt_config=PROMPT)
    def accuracy():
        chosen = prm.score([c.context for c, _ in pairs])
        rejected = prm.score([r.context for _, r in pairs])
        return np.mean(np.array(chosen) > np.array(rejected))

    before = accuracy()
    trainer = PRMTrainer(prm, train_args(tmp_path, loss="bradley_terry", preference_delta=0.2, max_steps=40,
                                         per_device_train_batch_size=4), targets)
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses[-1] < losses[0] - 0.05, losses
    assert accuracy() >= max(0.7, before + 0.15), (before, accuracy())


def test_validation_is_split_by_game_and_reports_the_metrics(targets, tmp_path):
    train, valid = split_by_game(targets, 0.34, seed=1)
    assert train and valid and not {r.game_file for r in train} & {r.game_file for r in valid}
    prm = tiny_prm(prompt_config=PROMPT)
    args = train_args(tmp_path, max_steps=4, validation_fraction=0.34, seed=1, eval_strategy="steps", eval_steps=4)
    trainer = PRMTrainer(prm, args, targets)
    trainer.train()
    metrics = trainer.evaluate()
    assert {"eval_loss", "eval_accuracy", "eval_auc", "eval_ece"} <= set(metrics)
    assert len(trainer.eval_dataset) == len(valid)


def test_auc_label_is_most_rollouts_won_not_q_above_one_half():
    # Q^ ranks the rows one way, the won rollouts the other: the AUC follows the wins.
    q = np.array([0.6, 0.55, 0.45, 0.4])
    success = np.array([0.0, 0.0, 1.0, 1.0])
    logits = np.array([-2.0, -1.0, 1.0, 2.0])
    metrics = prm_metrics(EvalPrediction(logits, (q, success)))
    assert metrics["auc"] == 1.0 and metrics["accuracy"] == 0.0
    assert prm_metrics(EvalPrediction(-logits, (q, success)))["auc"] == 0.0


def test_trainer_labels_success_from_the_wins(tmp_path):
    state = Context("task", observation="You are in a room.")
    # (action, q, visits, wins): a late win and an early loss (q > 0.5, half won); two far wins and a near loss.
    rows = [TargetRow(dataclasses.replace(state.propose(action), game_file=f"g{i}"), q, visits, wins)
            for i, (action, q, visits, wins) in enumerate([("look", 0.6, 2, 1), ("go to sink 1", 0.4, 3, 2),
                                                           ("look", 0.7, 1, None)])]
    trainer = PRMTrainer(tiny_prm(prompt_config=PROMPT), train_args(tmp_path, max_steps=1), rows)
    assert [item["success"] for item in trainer.train_dataset] == [0.0, 1.0, 1.0]
    assert [item["q"] for item in trainer.train_dataset] == [0.6, 0.4, 0.7]


def test_bad_inputs_are_named(tmp_path):
    prm = tiny_prm()
    with pytest.raises(ValueError, match="No target rows"):
        PRMTrainer(prm, PRMConfig(output_dir=str(tmp_path), use_cpu=True), [])
    with pytest.raises(ValueError, match="`loss`"):
        PRMConfig(output_dir=str(tmp_path), loss="mse")


def test_cli_collect_targets_train_and_evaluate_with_the_trained_prm(tmp_path, capsys):
    from prm_gym.cli import main

    backbone = tiny_prm().save_pretrained(tmp_path / "backbone")
    assert main(["collect", "--agent", "random", "--split", "tiny", "--num-games", "2", "--repeats", "2",
                 "--num-envs", "2", "--vectorization", "sync", "--backend", "fast", "--max-episode-steps", "6",
                 "--output-dir", str(tmp_path / "rollouts")]) == 0
    assert main(["targets", "--rollouts", str(tmp_path / "rollouts"), "--output-dir", str(tmp_path / "targets")]) == 0
    assert main(["train-prm", "--targets", str(tmp_path / "targets"), "--model", str(backbone), "--max-steps", "2",
                 "--validation-fraction", "0.5", "--max-prompt-tokens", "256", "--device", "cpu",
                 "--output-dir", str(tmp_path / "prm")]) == 0
    trained = tmp_path / "prm" / "model"
    record = json.loads((trained / "training.json").read_text())
    assert record["train_prm"]["max_steps"] == 2 and "targets" in record["targets"] and "eval_auc" in record["metrics"]
    assert main(["eval", "--agent", "best-of-n", "--reward-model", str(trained), "--n", "2", "--split", "tiny",
                 "--num-games", "1", "--max-episode-steps", "3", "--device", "cpu", "--backend", "fast"]) == 0
    assert "best-of-2(random, model) on tiny (1 games, cap 3 steps)" in capsys.readouterr().out


def test_cli_train_prm_without_targets_is_one_clear_line(tmp_path, capsys):
    from prm_gym.cli import main

    assert main(["train-prm", "--targets", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "prm")]) == 2
    assert "prm-gym: error: No targets at" in capsys.readouterr().err


def sgd_update(tmp_path, loss, rows, batch_size, accumulation):
    """Return the parameter change of one SGD step on all of ``rows`` (float32, no clipping), and its logged loss."""
    import torch

    prm = tiny_prm(prompt_config=PROMPT)
    before = [p.detach().clone() for p in prm.model.parameters()]
    args = train_args(tmp_path, loss=loss, max_steps=1, per_device_train_batch_size=batch_size,
                      gradient_accumulation_steps=accumulation, optim="sgd", learning_rate=0.5, max_grad_norm=0.0,
                      weight_decay=0.0, bf16=False, preference_delta=0.2, logging_steps=1)
    trainer = PRMTrainer(prm, args, rows)
    trainer.train()
    assert trainer.state.global_step == 1
    change = torch.cat([(p.detach() - b).flatten() for p, b in zip(prm.model.parameters(), before, strict=True)])
    return change, trainer.state.log_history[0]["loss"]


@pytest.mark.parametrize("loss", ["soft_bce", "bradley_terry"])
def test_gradient_accumulation_gives_the_update_of_one_big_batch(loss, tmp_path):
    # One update over the whole (tiny) training set either way, so the data order cannot matter: 2 x 2 rows
    # accumulated must move the weights as 4 rows at once, not twice as far (a loss taken as already scaled).
    import torch

    state = Context("put a mug in the coffeemachine.", observation="You are in a room.")
    actions = [("look", 0.9, 1), ("go to desk 1", 0.1, 0), ("inventory", 0.6, 1), ("go to sink basin 1", 0.0, 0)]
    rows = [TargetRow(dataclasses.replace(state.propose(action), game_file="g"), q, 2, 2 * wins)
            for action, q, wins in actions]
    if loss == "bradley_terry":  # 4 preference pairs from 4 states, each with a better and a worse action
        states = [state.propose("look").advance(f"You see {i} mugs.", {}) for i in range(4)]
        rows = [TargetRow(dataclasses.replace(s.propose(a), game_file="g"), q, 2) for s in states
                for a, q in (("take mug 1", 0.8), ("go to bed 1", 0.1))]
    big, big_loss = sgd_update(tmp_path / "big", loss, rows, batch_size=4, accumulation=1)
    accumulated, accumulated_loss = sgd_update(tmp_path / "accumulated", loss, rows, batch_size=2, accumulation=2)
    assert big.abs().max() > 1e-3  # the step did move the weights
    torch.testing.assert_close(accumulated, big, rtol=1e-3, atol=1e-6)
    assert accumulated_loss == pytest.approx(big_loss, rel=1e-3)  # the logged loss is the mean over the 4 rows too
