"""Rollouts: collecting a policy's episodes on vector envs into a resumable dataset, and the Monte-Carlo estimator."""

from prm_gym.rollout.collect import (
    CollectConfig,
    Episode,
    Step,
    collect_rollouts,
    load_rollouts,
    load_rollouts_config,
)
from prm_gym.rollout.monte_carlo import MonteCarloConfig, MonteCarloRewardModel

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
