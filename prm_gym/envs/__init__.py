"""Gymnasium environments for text games: ALFWorld and any TextWorld game."""

from prm_gym.envs.alfworld.env import ALFWorldEnv
from prm_gym.envs.text_game_env import TextGameEnv
from prm_gym.envs.textworld_env import TextWorldEnv

__all__ = ["ALFWorldEnv", "TextGameEnv", "TextWorldEnv"]
