"""Rollouts: collecting a policy's episodes on vector envs into a resumable dataset, and the Monte-Carlo estimator."""

from prm_gym.rollout.collect import CollectConfig, collect_rollouts
from prm_gym.rollout.monte_carlo import MonteCarloConfig, MonteCarloRewardModel
from prm_gym.rollout.storage import Episode, Step, load_rollouts, load_rollouts_config

__all__ = [
    "CollectConfig",
    "Episode",
    "MonteCarloConfig",
    "MonteCarloRewardModel",
    "Step",
    "collect_rollouts",
    "load_rollouts",
    "load_rollouts_config",
]
