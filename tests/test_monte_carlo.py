"""The Monte-Carlo rollout estimator as a reward model, on the tiny games and a generated TextWorld game."""

import dataclasses

import gymnasium as gym
import pytest

import prm_gym  # noqa: F401  (registers the environments)
from prm_gym.agents import ExpertAgent, WalkthroughAgent
from prm_gym.agents.walkthrough_agent import walkthrough_of
from prm_gym.envs import TextWorldEnv
from prm_gym.envs.alfworld.data import list_games
from prm_gym.prm import Context
from prm_gym.prm.targets import TargetsConfig
from prm_gym.rollout import MonteCarloConfig, MonteCarloRewardModel
from prm_gym.wrappers import ProcessRewardWrapper

GAME = str(list_games("tiny")[2])


def walkthrough_contexts(env):
    """The contexts along the game's walkthrough, each proposing the walkthrough's action."""
    obs, info = env.reset(options={"game": GAME})
    context, contexts = Context.from_reset(obs, info), []
    for action in walkthrough_of(info["game_file"]):
        contexts.append(context.propose(action))
        obs, *_, step_info = env.step(action)
        context = contexts[-1].advance(obs, step_info)
    return contexts


@pytest.fixture(scope="module")
def env():
    env = gym.make("prm_gym/ALFWorld-v0", split="tiny", backend="fast")
    yield env
    env.close()


def test_with_the_expert_as_rollout_policy_q_is_the_discounted_win(env):
    contexts = walkthrough_contexts(env)
    model = MonteCarloRewardModel(MonteCarloConfig(num_rollouts=2, targets=TargetsConfig(gamma=0.9)),
                                  policy_factory=lambda seed: ExpertAgent())
    scores = model.score(contexts)
    # After the walkthrough's t-th action the expert wins in len - 1 - t more steps: Q = gamma^(len-1-t), in [0, 1].
    expected = [(0.9 ** (len(contexts) - 1 - t) + 1) / 2 for t in range(len(contexts))]
    assert scores == pytest.approx(expected)
    assert scores[-1] == 1.0


def test_random_rollouts_are_reproducible_and_agree_across_engines(env):
    contexts = walkthrough_contexts(env)[:2]
    first = MonteCarloRewardModel(MonteCarloConfig(num_rollouts=3, seed=7, env_kwargs={"backend": "fast"}))
    again = MonteCarloRewardModel(MonteCarloConfig(num_rollouts=3, seed=7, env_kwargs={"backend": "fast"}))
    reference = MonteCarloRewardModel(MonteCarloConfig(num_rollouts=3, seed=7, max_episode_steps=8,
                                                       env_kwargs={"backend": "textworld"}))
    short = MonteCarloRewardModel(MonteCarloConfig(num_rollouts=3, seed=7, max_episode_steps=8))
    assert first.score(contexts) == again.score(contexts)
    assert short.score(contexts[:1]) == reference.score(contexts[:1])
    assert all(0.0 <= s <= 1.0 for s in first.score(contexts))


def test_as_the_reward_model_of_a_wrapper(env):
    model = MonteCarloRewardModel(MonteCarloConfig(num_rollouts=2), policy_factory=lambda seed: ExpertAgent())
    wrapped = ProcessRewardWrapper(gym.make("prm_gym/ALFWorld-v0", split="tiny", backend="fast"), model)
    obs, info = wrapped.reset(options={"game": GAME})
    context = wrapped.context
    first = walkthrough_of(info["game_file"])[0]
    _, reward, *_ = wrapped.step(first)
    assert reward == model.score([context.propose(first)])[0]
    wrapped.close()


def test_contexts_it_cannot_play_are_named(env):
    contexts = walkthrough_contexts(env)
    model = MonteCarloRewardModel(MonteCarloConfig(num_rollouts=1))
    with pytest.raises(ValueError, match="game_file"):
        model.score([Context(task="t", observation="o", action="look")])
    with pytest.raises(ValueError, match="no `action`"):
        model.score([Context(task="t", observation="o", game_file=GAME)])
    other_game = str(list_games("tiny")[0])
    with pytest.raises(ValueError, match="wrong game file"):
        model.score([Context(contexts[0].task, (), contexts[0].observation, action="look", game_file=other_game)])
    forged = Context(contexts[1].task, contexts[1].history, "not what the game said", action="look", game_file=GAME)
    with pytest.raises(ValueError, match="does not belong to this game"):
        model.score([forged])
    with pytest.raises(ValueError, match="num_rollouts"):
        MonteCarloConfig(num_rollouts=0)


def textworld_contexts(game_file):
    """The contexts along a TextWorld game's walkthrough (on ``prm_gym/TextWorld-v0``), each proposing its action."""
    env = gym.make("prm_gym/TextWorld-v0", game_files=str(game_file))
    obs, info = env.reset(seed=0)
    context, contexts = Context.from_reset(obs, info), []
    for action in walkthrough_of(info["game_file"]):
        contexts.append(context.propose(action))
        obs, *_, step_info = env.step(action)
        context = contexts[-1].advance(obs, step_info)
    env.close()
    return contexts


def test_textworld_games_are_scored_through_the_textworld_env(generated_game):
    contexts = textworld_contexts(generated_game)
    winning, useless = contexts[-1], contexts[-1].propose("inventory")
    config = MonteCarloConfig(num_rollouts=2, max_episode_steps=8, targets=TargetsConfig(gamma=0.9))
    walkthrough = MonteCarloRewardModel(config, policy_factory=lambda seed: WalkthroughAgent())
    # Along the walkthrough, Q = gamma^(steps left); off it the policy only looks until the cap (8 steps, the
    # useless action is the 3rd): a loss 5 steps later, return -gamma^5, Q = (1 - gamma^5) / 2.
    expected = [(0.9 ** (len(contexts) - 1 - t) + 1) / 2 for t in range(len(contexts))]
    assert len(contexts) == 3
    assert walkthrough.score([*contexts, useless]) == pytest.approx([*expected, (1 - 0.9**5) / 2])
    assert walkthrough.score([winning]) == [1.0]
    # Uniform random rollouts: seeded, and a win after "inventory" is at least one step later, so Q < 1.
    first, again = (MonteCarloRewardModel(dataclasses.replace(config, num_rollouts=4, seed=3)) for _ in range(2))
    scores = first.score([winning, useless])
    assert scores == again.score([winning, useless])
    assert scores[0] == 1.0
    assert 0.0 <= scores[1] <= (0.9 + 1) / 2
    for model in (walkthrough, first, again):
        model.close()


def test_alfworld_and_textworld_contexts_mix_and_env_options_are_checked(env, generated_game):
    alfworld, textworld = walkthrough_contexts(env)[-1], textworld_contexts(generated_game)[-1]
    model = MonteCarloRewardModel(MonteCarloConfig(num_rollouts=1, env_kwargs={"backend": "fast"}))
    assert model.score([alfworld, textworld, alfworld]) == [1.0, 1.0, 1.0]
    model.close()
    made = []

    def factory(game_file):
        made.append(game_file)
        return TextWorldEnv(game_files=[game_file])

    custom = MonteCarloRewardModel(MonteCarloConfig(num_rollouts=1), env_factory=factory)
    assert custom.score([textworld, textworld]) == [1.0, 1.0]
    assert made == [str(generated_game)]
    custom.close()
    with pytest.raises(ValueError, match="env_factory"):
        MonteCarloRewardModel(MonteCarloConfig(env_kwargs={"backend": "fast"}), env_factory=factory)
    with pytest.raises(ValueError, match="Glulx"):
        model.score([dataclasses.replace(textworld, game_file="quest.ulx")])
