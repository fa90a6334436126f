"""prm-gym: text-game environments (ALFWorld, TextWorld) for Gymnasium, with process reward models.

Importing the package registers the environments::

    import gymnasium as gym
    import prm_gym

    env = gym.make("prm_gym/ALFWorld-v0", split="valid_unseen")

Registration is by entry-point strings and the env classes (``prm_gym.ALFWorldEnv``, ``TextWorldEnv``,
``TextGameEnv``) are imported on first use (PEP 562), so that ``import prm_gym`` (and ``prm_gym.prm``, for a
:class:`~prm_gym.prm.context.Context`) loads no game engine (TextWorld, ALFWorld) and no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gymnasium.envs.registration import register, registry

if TYPE_CHECKING:
    from prm_gym.envs import ALFWorldEnv, TextGameEnv, TextWorldEnv

__version__ = "0.1.0"
__all__ = ["ALFWorldEnv", "TextGameEnv", "TextWorldEnv", "__version__"]

#: The AgentPRM paper's step cap for ALFWorld episodes.
ALFWORLD_MAX_EPISODE_STEPS = 30

_ENVIRONMENTS = {
    "prm_gym/ALFWorld-v0": ("prm_gym.envs.alfworld.env:ALFWorldEnv", ALFWORLD_MAX_EPISODE_STEPS),
    "prm_gym/TextWorld-v0": ("prm_gym.envs.textworld_env:TextWorldEnv", 100),
}
for _env_id, (_entry_point, _max_steps) in _ENVIRONMENTS.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point=_entry_point, max_episode_steps=_max_steps)


def __getattr__(name: str) -> Any:
    """Import the env classes on first use: they load the game engines."""
    if name in {"ALFWorldEnv", "TextGameEnv", "TextWorldEnv"}:
        return getattr(importlib.import_module("prm_gym.envs"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
