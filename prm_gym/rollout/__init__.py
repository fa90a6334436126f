"""Episodes: the one runner that plays them, their on-disk format, rollout collection and the Monte-Carlo estimator.

The runner (:mod:`~prm_gym.rollout.runner`) and the collection (:class:`CollectConfig`, :func:`collect_rollouts`)
are imported on first use (PEP 562): they load ALFWorld's env, which reading episodes and the estimator's import
do not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from prm_gym.rollout.monte_carlo import MonteCarloConfig, MonteCarloRewardModel
from prm_gym.rollout.storage import (
    Episode,
    Step,
    episodes_dataset,
    export_parquet,
    load_episodes,
    load_run_config,
)

if TYPE_CHECKING:
    from prm_gym.rollout.collect import CollectConfig, collect_rollouts
    from prm_gym.rollout.runner import EpisodeSpec, RunConfig, run_episodes

__all__ = [
    "CollectConfig",
    "Episode",
    "EpisodeSpec",
    "MonteCarloConfig",
    "MonteCarloRewardModel",
    "RunConfig",
    "Step",
    "collect_rollouts",
    "episodes_dataset",
    "export_parquet",
    "load_episodes",
    "load_run_config",
    "run_episodes",
]

#: What is imported on first use, and from where.
_LAZY = {
    "CollectConfig": "prm_gym.rollout.collect",
    "collect_rollouts": "prm_gym.rollout.collect",
    "EpisodeSpec": "prm_gym.rollout.runner",
    "RunConfig": "prm_gym.rollout.runner",
    "run_episodes": "prm_gym.rollout.runner",
}


def __getattr__(name: str) -> Any:
    """Import the runner and the collection on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
