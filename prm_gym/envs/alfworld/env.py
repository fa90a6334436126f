"""``prm_gym/ALFWorld-v0``: ALFWorld's text games, played by ALFWorld's own text engine."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

from alfworld.agents.environment.alfred_tw_env import AlfredDemangler

from prm_gym.envs.alfworld.data import list_games
from prm_gym.envs.alfworld.tasks import task_type_of_game_dir
from prm_gym.envs.engine import GameTurn, TextWorldEngine
from prm_gym.envs.text_game_env import TextGameEnv

__all__ = ["ALFWorldEnv"]

_TASK_PATTERN = re.compile(r"Your task is to: (.*)")


class ALFWorldEnv(TextGameEnv):
    """ALFWorld's household text games (Shridhar et al., 2021) as a Gymnasium environment.

    Games are ALFWorld's ``game.tw-pddl`` files, played by TextWorld's PDDL engine with ALFWorld's
    demangler (objects read "apple 1", as published ALFWorld agents see them). An inadmissible or empty
    command returns "Nothing happens."; winning gives reward 1.0 and ends the episode. Register-time
    ``max_episode_steps`` is 30 (the AgentPRM paper's cap); ``gym.make(..., max_episode_steps=N)`` changes it.

    Besides :class:`~prm_gym.envs.text_game_env.TextGameEnv`'s keys, ``info`` has ``task`` (the goal
    sentence) and ``task_type`` (ALFWorld's name, e.g. ``"pick_clean_then_place_in_recep"``).

    Example:
        >>> import gymnasium as gym
        >>> import prm_gym
        >>> env = gym.make("prm_gym/ALFWorld-v0", split="tiny", task_types="look")
        >>> obs, info = env.reset(seed=0)
        >>> info["task_type"], info["task"] == obs.split("Your task is to: ")[1]
        ('look_at_obj_in_light', True)
        >>> for command in info["walkthrough"]:
        ...     obs, reward, terminated, truncated, info = env.step(command)
        >>> reward, terminated, info["won"]
        (1.0, True, True)
        >>> env.step("dance")[0]
        'Nothing happens.'
    """

    def __init__(
        self,
        split: str = "valid_unseen",
        *,
        task_types: Iterable[str | int] | str | int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        game_files: Sequence[str | os.PathLike[str]] | None = None,
        shuffle: bool = True,
        render_mode: str | None = None,
    ) -> None:
        """Create the env over a split's games (``game_files`` instead, when given), filtered by ``task_types``."""
        if game_files is None:
            game_files = list_games(split, data_dir=data_dir, task_types=task_types)
        self.split = split
        super().__init__(
            game_files,
            shuffle=shuffle,
            render_mode=render_mode,
            engine=TextWorldEngine(wrappers=[AlfredDemangler(shuffle=False)]),
        )
        self._task = ""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an ALFWorld game (see :meth:`TextGameEnv.reset`)."""
        self._task = ""
        obs, info = super().reset(seed=seed, options=options)
        match = _TASK_PATTERN.search(obs)
        self._task = match.group(1).strip() if match else ""
        info["task"] = self._task
        return obs, info

    def _extra_info(self, turn: GameTurn) -> dict[str, Any]:
        game_dir = os.path.basename(os.path.dirname(os.path.dirname(str(self.engine.game_file))))
        return {"task": self._task, "task_type": task_type_of_game_dir(game_dir).name}
