"""Gymnasium environments for text games: ALFWorld and any TextWorld game.

The env classes are imported on first use (PEP 562): they load TextWorld (and ALFWorld), which the light modules
of this package (:mod:`~prm_gym.envs.game_files`, :mod:`~prm_gym.envs.spaces`, :mod:`~prm_gym.envs.vector`) do not
need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prm_gym.envs.alfworld.env import ALFWorldEnv
    from prm_gym.envs.text_game_env import TextGameEnv
    from prm_gym.envs.textworld_env import TextWorldEnv

__all__ = ["ALFWorldEnv", "TextGameEnv", "TextWorldEnv"]

#: Where each env class lives.
_MODULES = {
    "ALFWorldEnv": "prm_gym.envs.alfworld.env",
    "TextGameEnv": "prm_gym.envs.text_game_env",
    "TextWorldEnv": "prm_gym.envs.textworld_env",
}


def __getattr__(name: str) -> Any:
    """Import an env class on first use."""
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
