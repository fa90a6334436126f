"""ALFWorld: task types, game data, the Gymnasium environment and its engines.

The environment and its engines (:class:`ALFWorldEnv`, :data:`BACKENDS`, :func:`make_engine`) are imported on
first use (PEP 562): they load TextWorld and ALFWorld, which the game data and task types do not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from prm_gym.envs.alfworld.data import DataNotFoundError, find_data_dir, list_games, prepare_data, resolve_split
from prm_gym.envs.alfworld.tasks import TASK_TYPES, TaskType, parse_task_types

if TYPE_CHECKING:
    from prm_gym.envs.alfworld.env import BACKENDS, ALFWorldEnv, make_engine

__all__ = [
    "ALFWorldEnv",
    "BACKENDS",
    "DataNotFoundError",
    "TASK_TYPES",
    "TaskType",
    "find_data_dir",
    "list_games",
    "make_engine",
    "parse_task_types",
    "prepare_data",
    "resolve_split",
]


def __getattr__(name: str) -> Any:
    """Import the environment and its engines on first use."""
    if name in {"ALFWorldEnv", "BACKENDS", "make_engine"}:
        return getattr(importlib.import_module("prm_gym.envs.alfworld.env"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
