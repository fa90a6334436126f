"""Rollouts: collecting a policy's episodes on vector envs into a resumable dataset, and the Monte-Carlo estimator.

The collection (:class:`CollectConfig`, :func:`collect_rollouts`) is imported on first use (PEP 562): it loads
ALFWorld's env, which reading rollouts and the estimator's import do not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from prm_gym.rollout.monte_carlo import MonteCarloConfig, MonteCarloRewardModel
from prm_gym.rollout.storage import Episode, Step, load_rollouts, load_rollouts_config

if TYPE_CHECKING:
    from prm_gym.rollout.collect import CollectConfig, collect_rollouts

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


def __getattr__(name: str) -> Any:
    """Import the collection on first use."""
    if name in {"CollectConfig", "collect_rollouts"}:
        return getattr(importlib.import_module("prm_gym.rollout.collect"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
