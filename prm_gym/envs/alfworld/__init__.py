"""ALFWorld: task types, game data, and the Gymnasium environment."""

from prm_gym.envs.alfworld.data import DataNotFoundError, find_data_dir, list_games, prepare_data, resolve_split
from prm_gym.envs.alfworld.env import ALFWorldEnv
from prm_gym.envs.alfworld.tasks import TASK_TYPES, TaskType, parse_task_types

__all__ = [
    "ALFWorldEnv",
    "DataNotFoundError",
    "TASK_TYPES",
    "TaskType",
    "find_data_dir",
    "list_games",
    "parse_task_types",
    "prepare_data",
    "resolve_split",
]
