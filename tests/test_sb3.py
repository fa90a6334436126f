"""Stable-Baselines3 adapters: SB3's own env checker, masks, hashing, embeddings, vector envs, process rewards, PPO."""

import os
import random
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest

import prm_gym  # noqa: F401  (registers the environments)
from prm_gym.rollout import MonteCarloConfig, MonteCarloRewardModel
from prm_gym.wrappers import (
    SB3_GAMMA,
    DiscreteCommands,
    HashingFeaturizer,
    ProcessRewardConfig,
    ProcessRewardWrapper,
    TextFeatures,
    VectorProcessRewardWrapper,
    adapt_for_sb3,
)
from prm_gym.wrappers.commands import NO_COMMAND

pytest.importorskip("stable_baselines3")
pytest.importorskip("sb3_contrib")
from sb3_contrib import MaskablePPO  # noqa: E402
from stable_baselines3.common.env_checker import check_env  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.vec_env import SubprocVecEnv  # noqa: E402

TEXTS = ["You arrive at desk 1. On the desk 1, you see a cellphone 1.", "look at book under the desklamp.", ""]


def tiny(task_types=None, **kwargs):
    return gym.make("prm_gym/ALFWorld-v0", split="tiny", task_types=task_types, **kwargs)


def adapted_look_env():
    return adapt_for_sb3(tiny("look"))


class TakeScorer:
    """A reward model that likes `take` commands."""

    def score(self, contexts):
        return [0.9 if c.action.startswith("take") else 0.1 for c in contexts]


@pytest.mark.parametrize("parts", [("task", "observation"), ("observation", "commands"), ("task",)])
@pytest.mark.parametrize("reward_model", [None, TakeScorer()])
def test_sb3_check_env_passes_on_the_adapted_env(parts, reward_model):
    env = adapt_for_sb3(tiny(), reward_model=reward_model, parts=parts, featurizer=HashingFeaturizer(dim=32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SB3's checker warns about spaces and values it finds dubious
        check_env(env)
    assert env.observation_space.shape == (32 * len(parts),)


def test_masks_equal_the_admissible_commands_over_played_episodes():
    env = DiscreteCommands(tiny(), max_actions=16)
    rng = random.Random(0)
    checked = 0
    for episode in range(6):
        _, info = env.reset(seed=episode)
        while True:
            commands = sorted(info["admissible_commands"])
            mask = env.action_masks()
            assert env.commands == commands
            assert mask.dtype == bool and mask.shape == (16,)
            assert np.flatnonzero(mask).tolist() == list(range(len(commands)))
            checked += 1
            index = rng.randrange(len(commands))
            _, _, terminated, truncated, info = env.step(np.int64(index))
            assert info["command"] == commands[index] and not info["invalid_action"]
            if terminated or truncated:
                break
    assert checked > 50


@pytest.mark.parametrize("action", [15, np.int64(9), -1, 99, 2.5, "look"])
def test_an_index_past_the_list_plays_as_an_inadmissible_command(action):
    adapted, text = DiscreteCommands(tiny("look"), max_actions=16), tiny("look")
    _, info = adapted.reset(seed=0)
    text.reset(seed=0)
    assert len(info["admissible_commands"]) == 8
    played = adapted.step(action)
    expected = text.step("go to the moon")
    assert played[:4] == expected[:4] == ("Nothing happens.", 0.0, False, False)
    assert played[4]["invalid_action"] and played[4]["command"] == NO_COMMAND
    assert {k: v for k, v in played[4].items() if k != "command"} == expected[4]
    # The steps count, as any inadmissible command's: the time limit comes as it would.
    for _ in range(29):
        *_, truncated, _ = adapted.step(15)
    assert truncated


def test_commands_past_max_actions_cannot_be_chosen_and_a_warning_says_so():
    env = DiscreteCommands(tiny("look"), max_actions=3)
    with pytest.warns(UserWarning, match="Raise `max_actions`"):
        _, info = env.reset(seed=0)
    assert env.commands == sorted(info["admissible_commands"])[:3]
    assert env.action_masks().tolist() == [True, True, True]


def test_adapters_refuse_an_env_that_is_not_text_and_bad_settings():
    with pytest.raises(TypeError, match="Put text-level wrappers"):
        DiscreteCommands(DiscreteCommands(tiny()))
    with pytest.raises(TypeError, match="Put text-level wrappers"):
        TextFeatures(TextFeatures(tiny()))
    with pytest.raises(TypeError, match="ProcessRewardWrapper scores the text.*Discrete"):
        ProcessRewardWrapper(adapt_for_sb3(tiny()), TakeScorer())
    with pytest.raises(TypeError, match="VectorProcessRewardWrapper scores the text.*Box"):
        VectorProcessRewardWrapper(gym.vector.SyncVectorEnv([lambda: TextFeatures(tiny())]), TakeScorer())
    with pytest.raises(ValueError, match="`max_actions`"):
        DiscreteCommands(tiny(), max_actions=0)
    with pytest.raises(ValueError, match="`parts`"):
        TextFeatures(tiny(), parts=("task", "history"))
    with pytest.raises(ValueError, match="`dim`"):
        HashingFeaturizer(dim=0)


def test_hashing_vectors_are_the_same_in_every_process():
    here = HashingFeaturizer(dim=64).transform(TEXTS)
    code = (
        "import sys; from prm_gym.wrappers import HashingFeaturizer\n"
        f"sys.stdout.write(HashingFeaturizer(dim=64).transform({TEXTS!r}).tobytes().hex())"
    )
    for hash_seed in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": hash_seed})
        there = np.frombuffer(bytes.fromhex(done.stdout), dtype=np.float32).reshape(here.shape)
        assert np.array_equal(here, there)
    assert np.linalg.norm(here[:2], axis=1) == pytest.approx([1.0, 1.0]) and not here[2].any()
    assert np.abs(here[0] @ here[1]) < 0.9  # different texts, different vectors


def test_transformer_embeddings_are_mean_pooled_unit_vectors_cached_per_text():
    pytest.importorskip("torch")
    from conftest import tiny_llama

    from prm_gym.wrappers import TransformerEmbeddings

    model, tokenizer = tiny_llama("LlamaModel")
    embeddings = TransformerEmbeddings(model, tokenizer, max_batch_tokens=4096)
    calls = []
    embed = embeddings._embed
    embeddings._embed = lambda texts: calls.append(list(texts)) or embed(texts)
    batch = embeddings.transform([TEXTS[0], TEXTS[1], TEXTS[0]])
    assert calls == [[TEXTS[0], TEXTS[1]]]  # each distinct text embedded once
    assert batch.shape == (3, 64) and batch.dtype == np.float32
    assert np.linalg.norm(batch, axis=1) == pytest.approx([1.0] * 3, abs=1e-5)
    assert np.array_equal(batch[0], batch[2])
    again = embeddings.transform([TEXTS[1]])
    assert len(calls) == 1 and np.array_equal(again[0], batch[1])  # from the cache
    alone = TransformerEmbeddings(model, tokenizer).transform([TEXTS[1]])  # no padding: the same vector
    assert alone[0] == pytest.approx(batch[1], abs=1e-5)
    env = adapt_for_sb3(tiny(), featurizer=embeddings)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env)
    assert env.observation_space.shape == (128,)


def test_make_vec_env_with_subprocesses_steps_with_masks():
    envs = make_vec_env(adapted_look_env, n_envs=2, seed=0, vec_env_cls=SubprocVecEnv)
    try:
        observations = envs.reset()
        assert observations.shape == (2, 512)
        for _ in range(5):
            masks = np.stack(envs.env_method("action_masks"))
            assert masks.shape == (2, 128) and masks.sum(axis=1).min() >= 8
            observations, rewards, dones, infos = envs.step(masks.argmax(axis=1))  # the first admissible command
            assert all(not info["invalid_action"] for info in infos)
        learner = MaskablePPO("MlpPolicy", envs, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
        learner.learn(32)
        assert learner.num_timesteps == 32
    finally:
        envs.close()


def test_monte_carlo_shaping_in_front_of_the_adapters_gives_the_text_env_rewards():
    """Potential-based MC shaping: the same rewards through the adapters as on the text env, telescoping in V."""
    config = MonteCarloConfig(num_rollouts=2)
    adapted = adapt_for_sb3(tiny("look", privileged="walkthrough"), reward_model=MonteCarloRewardModel(config))
    # The adapters' default: potential-based shaping at SB3's discount, on the text env, in front of them.
    shaping = ProcessRewardConfig(mode="shaped", gamma=SB3_GAMMA)
    text = ProcessRewardWrapper(tiny("look", privileged="walkthrough"), MonteCarloRewardModel(config), shaping)
    _, info = adapted.reset(seed=0)
    text.reset(seed=0)
    values = []
    for command in info["walkthrough"]:
        index = adapted.get_wrapper_attr("commands").index(command)
        _, reward, terminated, _, info = adapted.step(index)
        _, text_reward, _, _, text_info = text.step(command)
        assert reward == pytest.approx(text_reward) and info["prm_value"] == pytest.approx(text_info["prm_value"])
        if values:
            assert reward == pytest.approx(info["env_reward"] + SB3_GAMMA * info["prm_value"] - values[-1])
        values.append(info["prm_value"])
    assert terminated and info["env_reward"] == 1.0 and values[-1] == 0.0
    assert reward == pytest.approx(1.0 - values[-2]) and values[-2] > 0.5  # one step from the win: V is high


def random_success(episodes, seed):
    env = DiscreteCommands(tiny("look"))
    rng = random.Random(seed)
    wins = 0
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        while True:
            *_, terminated, truncated, info = env.step(rng.choice(np.flatnonzero(env.action_masks()).tolist()))
            if terminated or truncated:
                wins += info["won"]
                break
    return wins / episodes


def test_maskable_ppo_learns_the_easiest_tiny_game_beyond_a_random_policy():
    import torch

    torch.set_num_threads(1)
    env = adapted_look_env()
    learner = MaskablePPO("MlpPolicy", env, n_steps=256, batch_size=64, seed=0, device="cpu")
    learner.learn(6144)
    episodes, wins = 40, 0
    for episode in range(episodes):
        observation, _ = env.reset(seed=1000 + episode)
        while True:
            masks = env.get_wrapper_attr("action_masks")()
            action, _ = learner.predict(observation, action_masks=masks, deterministic=False)
            observation, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                wins += info["won"]
                break
    baseline = random_success(episodes, seed=1000)
    assert baseline < 0.2  # the game is not won by chance...
    assert wins / episodes > baseline + 0.4  # ...but the learned policy wins it
