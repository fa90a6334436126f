"""Process-reward wrappers: rewards equal direct score calls; the vector version equals N single wrappers."""

import hashlib
import math

import gymnasium as gym
import numpy as np
import pytest

import prm_gym  # noqa: F401  (registers the environments)
from prm_gym.prm import Context
from prm_gym.wrappers import ProcessRewardConfig, ProcessRewardWrapper, VectorProcessRewardWrapper


class HashScorer:
    """A deterministic reward model: a score in [0, 1] from each context's key; counts its calls."""

    def __init__(self):
        self.calls = []

    def score(self, contexts):
        self.calls.append(len(contexts))
        return [int(hashlib.sha256(c.key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF for c in contexts]


class ByVerb:
    """A reward model whose score p depends only on the command's first word; counts its calls."""

    SCORES = {"go": 0.8, "take": 0.2, "move": 0.9, "dance": 1.0}

    def __init__(self):
        self.calls = []

    def score(self, contexts):
        self.calls.append(len(contexts))
        return [self.SCORES.get(c.action.split()[0], 0.5) for c in contexts]


# Q = log(p / (1 - p)) of ByVerb's scores, by hand; p = 1 is clamped to 1 - 1e-6; 0.5 (any other verb) gives 0.
LOGITS = {"go": math.log(4.0), "take": -math.log(4.0), "move": math.log(9.0), "dance": math.log((1 - 1e-6) / 1e-6)}


def by_hand_q(command):
    return LOGITS.get(command.split()[0], 0.0)


def value(model, context, how="max"):
    scores = model.score([context.propose(c) for c in context.admissible_commands])
    return max(scores) if how == "max" else sum(scores) / len(scores)


def play_walkthrough(env, seed):
    """Play one tiny game's walkthrough (plus one inadmissible command); yield what each step returned."""
    obs, info = env.reset(seed=seed)
    context = Context.from_reset(obs, info)
    for action in ["dance", *info["walkthrough"]]:
        obs, reward, terminated, truncated, step_info = env.step(action)
        yield context, action, reward, terminated, step_info
        context = context.propose(action).advance(obs, step_info)


@pytest.fixture
def tiny_env():
    env = gym.make("prm_gym/ALFWorld-v0", split="tiny", privileged=("walkthrough",))
    yield env
    env.close()


@pytest.mark.parametrize("mode", ["replace", "add"])
def test_rewards_equal_direct_score_calls(tiny_env, mode):
    model, reference = HashScorer(), HashScorer()
    env = ProcessRewardWrapper(tiny_env, model, ProcessRewardConfig(mode=mode, coef=0.5))
    steps = list(play_walkthrough(env, seed=3))
    for context, action, reward, _, info in steps:
        (q,) = reference.score([context.propose(action)])
        assert info["prm_score"] == q
        assert reward == pytest.approx((info["env_reward"] if mode == "add" else 0.0) + 0.5 * q)
    assert env.context.history == tuple((context.observation, action) for context, action, *_ in steps)
    assert steps[-1][3] and steps[-1][4]["env_reward"] == 1.0 and steps[0][4]["invalid_action"]
    assert model.calls == [1] * len(steps)  # one context scored per step


@pytest.mark.parametrize("how", ["max", "mean"])
def test_shaped_rewards_are_potential_differences(tiny_env, how):
    model, reference = HashScorer(), HashScorer()
    config = ProcessRewardConfig(mode="shaped", coef=2.0, gamma=0.9, value=how)
    env = ProcessRewardWrapper(tiny_env, model, config)
    steps = list(play_walkthrough(env, seed=4))
    for (context, _, reward, terminated, info), nxt in zip(steps, [*steps[1:], None], strict=True):
        next_value = 0.0 if terminated else value(reference, nxt[0], how)
        expected = info["env_reward"] + 2.0 * (0.9 * next_value - value(reference, context, how))
        assert reward == pytest.approx(expected) and info["prm_value"] == pytest.approx(next_value)
    assert steps[-1][3]


@pytest.mark.parametrize("how", ["max", "mean"])
def test_recovered_rewards_are_q_minus_discounted_values_in_logits(tiny_env, how):
    model = ByVerb()
    config = ProcessRewardConfig(mode="recovered", coef=0.5, gamma=0.9, value=how)
    steps = list(play_walkthrough(ProcessRewardWrapper(tiny_env, model, config), seed=4))
    for _, action, reward, terminated, info in steps:
        next_qs = [by_hand_q(c) for c in info["admissible_commands"]]
        next_value = 0.0 if terminated else (max(next_qs) if how == "max" else sum(next_qs) / len(next_qs))
        assert reward == pytest.approx(0.5 * (by_hand_q(action) - 0.9 * next_value))
        assert info["prm_value"] == pytest.approx(next_value)
        assert info["prm_score"] == ByVerb.SCORES.get(action.split()[0], 0.5)
    dance, *_, last = steps
    if how == "max":  # a score of 1 gives a large finite Q; the next state can "go to": V = log 4
        assert dance[2] == pytest.approx(0.5 * (13.815509557963773 - 0.9 * 1.3862943611198906))
    # The won step: V(s') = 0 although the final state has commands; the env's reward of 1 is not added.
    assert last[1].startswith("move") and last[3] and last[4]["env_reward"] == 1.0
    assert last[2] == pytest.approx(0.5 * math.log(9.0)) and last[4]["prm_value"] == 0.0
    # One batch per step, none at reset; the won step needs none: its action was scored with its state's value.
    assert len(model.calls) == len(steps) - 1


def test_recovered_value_is_kept_when_truncated():
    env = gym.make("prm_gym/ALFWorld-v0", split="tiny", max_episode_steps=1)
    env = ProcessRewardWrapper(env, ByVerb(), ProcessRewardConfig(mode="recovered", gamma=0.9))
    env.reset(seed=4)
    _, reward, terminated, truncated, info = env.step("go to sidetable 1")
    assert truncated and not terminated
    assert info["prm_value"] == pytest.approx(math.log(4.0))  # max over the next state's "go to" commands
    assert reward == pytest.approx(math.log(4.0) - 0.9 * math.log(4.0))
    env.close()


def test_reset_starts_a_new_history(tiny_env):
    env = ProcessRewardWrapper(tiny_env, HashScorer())
    with pytest.raises(gym.error.ResetNeeded):
        env.step("look")
    env.reset(seed=0)
    env.step("look")
    assert len(env.context.history) == 1
    obs, _ = env.reset(seed=1)
    assert env.context.history == () and env.context.observation == obs


@pytest.mark.parametrize("mode", ["shaped", "recovered"])
@pytest.mark.parametrize("autoreset", [gym.vector.AutoresetMode.NEXT_STEP, gym.vector.AutoresetMode.SAME_STEP])
def test_vector_wrapper_equals_single_wrappers_across_autoresets(autoreset, mode):
    vector_model, single_model = HashScorer(), HashScorer()
    config = ProcessRewardConfig(mode=mode, gamma=0.95)
    envs = VectorProcessRewardWrapper(
        gym.make_vec("prm_gym/ALFWorld-v0", num_envs=2, split="tiny", vector_kwargs={"autoreset_mode": autoreset},
                     privileged=("walkthrough",)),
        vector_model,
        config,
    )
    singles = [
        ProcessRewardWrapper(gym.make("prm_gym/ALFWorld-v0", split="tiny", privileged=("walkthrough",)), single_model,
                             config)
        for _ in "ab"
    ]
    obs, infos = envs.reset(seed=7)
    plans, single_obs = [], []
    for i, single in enumerate(singles):
        o, info = single.reset(seed=7 + i)
        assert o == obs[i]
        plans.append(list(info["walkthrough"]))
        single_obs.append(o)
    episodes_done = [0, 0]
    pending_reset = [False, False]
    for _ in range(max(map(len, plans)) + 4):
        actions = tuple(plan.pop(0) if plan else "look" for plan in plans)
        obs, rewards, terminations, truncations, infos = envs.step(actions)
        for i, single in enumerate(singles):
            if pending_reset[i]:  # NEXT_STEP: this step reset the sub-env
                o, info = single.reset()
                assert o == obs[i] and rewards[i] == 0.0 and math.isnan(infos["prm_score"][i])
                assert envs.contexts[i].history == ()
                plans[i] = list(info["walkthrough"])
                pending_reset[i] = False
                continue
            o, r, term, trunc, info = single.step(actions[i])
            assert (r, term, trunc) == (rewards[i], terminations[i], truncations[i])
            assert info["prm_score"] == infos["prm_score"][i] and info["prm_value"] == infos["prm_value"][i]
            if term or trunc:
                episodes_done[i] += 1
                if autoreset == gym.vector.AutoresetMode.SAME_STEP:
                    assert infos["final_obs"][i] == o
                    o, info = single.reset()
                    assert o == obs[i] and envs.contexts[i].history == ()
                    plans[i] = list(info["walkthrough"])
                else:
                    pending_reset[i] = True
            else:
                assert o == obs[i] and envs.contexts[i] == single.context
    assert min(episodes_done) >= 1
    envs.close()


def test_vector_wrapper_scores_all_sub_envs_in_one_call():
    model = HashScorer()
    envs = VectorProcessRewardWrapper(gym.make_vec("prm_gym/ALFWorld-v0", num_envs=3, split="tiny"), model)
    _, infos = envs.reset(seed=0)
    assert model.calls == []  # replace mode: nothing to score before the first action
    for _ in range(3):
        _, _, _, _, infos = envs.step(tuple(commands[0] for commands in infos["admissible_commands"]))
    assert model.calls == [3, 3, 3]
    envs.close()


def test_masked_reset_restarts_only_the_masked_sub_envs():
    envs = VectorProcessRewardWrapper(
        gym.make_vec("prm_gym/ALFWorld-v0", num_envs=2, split="tiny",
                     vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.DISABLED}),
        HashScorer(),
    )
    envs.reset(seed=0)
    envs.step(("look", "look"))
    envs.reset(options={"reset_mask": np.array([True, False])})
    assert envs.contexts[0].history == () and len(envs.contexts[1].history) == 1
    envs.close()


def test_bad_reward_models_give_clear_errors(tiny_env):
    with pytest.raises(TypeError, match="score"):
        ProcessRewardWrapper(tiny_env, object())

    class Short:
        def score(self, contexts):
            return []

    env = ProcessRewardWrapper(tiny_env, Short())
    env.reset(seed=0)
    with pytest.raises(ValueError, match="0 scores for 1 contexts"):
        env.step("look")
    with pytest.raises(ValueError, match="`mode` should be 'replace', 'add', 'shaped' or 'recovered'"):
        ProcessRewardConfig(mode="multiply")
