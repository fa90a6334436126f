"""Scores are checked where they are read: NaN, inf, out-of-range or missing scores stop every consumer."""

import math

import gymnasium as gym
import numpy as np
import pytest

import prm_gym  # noqa: F401  (registers the environments)
from prm_gym.agents import BestOfNAgent, RandomAgent
from prm_gym.prm import Context
from prm_gym.prm.base import checked_scores
from prm_gym.wrappers import ProcessRewardConfig, ProcessRewardWrapper, VectorProcessRewardWrapper

BAD_SCORES = [math.nan, math.inf, -math.inf, 1.5, -0.25, None, "0.5x"]


class FirstIs:
    """Scores the first context of each call ``first``, the others 0.5."""

    def __init__(self, first):
        self.first = first

    def score(self, contexts):
        return [self.first] + [0.5] * (len(contexts) - 1)


def proposals(n):
    state = Context(task="look", observation="You are in a room.", admissible_commands=("look", "inventory"))
    return [state.propose(f"go to desk {i}") for i in range(n)]


@pytest.mark.parametrize("bad", BAD_SCORES)
def test_checked_scores_rejects_non_finite_and_out_of_range_scores(bad):
    class Broken:
        def score(self, contexts):
            return [0.25, 0.5, bad]

    with pytest.raises(ValueError, match=r"Broken\.score returned .* for contexts\[2\]: .*finite numbers in \[0, 1\]"):
        checked_scores(Broken(), proposals(3))


def test_checked_scores_accepts_the_whole_range_and_numpy_values():
    class Edges:
        def score(self, contexts):
            return np.array([0.0, 1.0, 0.5], dtype=np.float32)

    scores = checked_scores(Edges(), proposals(3))
    assert scores == [0.0, 1.0, 0.5] and all(type(s) is float for s in scores)


def test_checked_scores_rejects_a_wrong_number_of_scores():
    class Short:
        def score(self, contexts):
            return [0.5]

    with pytest.raises(ValueError, match=r"Short\.score returned 1 scores for 3 contexts"):
        checked_scores(Short(), proposals(3))


@pytest.mark.parametrize("bad", [math.nan, math.inf, 2.0])
def test_best_of_n_refuses_a_bad_score_even_when_it_comes_first(bad):
    agent = BestOfNAgent(RandomAgent(seed=0), FirstIs(bad), n=8)
    with pytest.raises(ValueError, match=r"FirstIs\.score returned .* for contexts\[0\]"):
        agent.act("", {"admissible_commands": ["look", "inventory", "go to desk 1"]})


@pytest.mark.parametrize("mode", ["replace", "add", "shaped"])
def test_the_wrapper_refuses_a_nan_score_rather_than_rewarding_nan(mode):
    env = ProcessRewardWrapper(
        gym.make("prm_gym/ALFWorld-v0", split="tiny"), FirstIs(math.nan), ProcessRewardConfig(mode=mode)
    )
    with pytest.raises(ValueError, match=r"FirstIs\.score returned nan"):
        env.reset(seed=0)  # shaped mode scores the first state's commands at reset
        env.step("look")
    env.close()


def test_the_vector_wrapper_refuses_a_nan_score():
    envs = VectorProcessRewardWrapper(gym.make_vec("prm_gym/ALFWorld-v0", num_envs=2, split="tiny"), FirstIs(math.nan))
    _, infos = envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"FirstIs\.score returned nan for contexts\[0\]"):
        envs.step(("look", infos["admissible_commands"][1][0]))
    envs.close()
