"""ALFWorld: task types, game data, the Gymnasium environment and its engines."""

from prm_gym.envs.alfworld.data import DataNotFoundError, find_data_dir, list_games, prepare_data, resolve_split
from prm_gym.envs.alfworld.env import BACKENDS, ALFWorldEnv, make_engine
from prm_gym.envs.alfworld.tasks import TASK_TYPES, TaskType, parse_task_types

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
