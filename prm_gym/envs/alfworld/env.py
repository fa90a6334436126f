"""``prm_gym/ALFWorld-v0``: ALFWorld's text games, played by the fast engine (default) or ALFWorld's own engine."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from typing import Any

from alfworld.agents.environment.alfred_tw_env import AlfredDemangler

from prm_gym.envs.alfworld.data import list_games
from prm_gym.envs.alfworld.fast import FastALFWorldEngine
from prm_gym.envs.alfworld.tasks import task_type_of_game_dir
from prm_gym.envs.engine import GameEngine, GameTurn, TextWorldEngine
from prm_gym.envs.game_files import game_file_list
from prm_gym.envs.text_game_env import TextGameEnv

__all__ = ["ALFWorldEnv", "BACKENDS", "DEFAULT_BACKEND", "make_engine"]

_TASK_PATTERN = re.compile(r"Your task is to: (.*)")

#: The engines that play ALFWorld's games: ``"fast"`` (:class:`~prm_gym.envs.alfworld.fast.FastALFWorldEngine`,
#: state snapshots in constant time) and ``"textworld"`` (TextWorld's PDDL engine with ALFWorld's demangler,
#: the reference); both give the same turns, step for step.
BACKENDS = ("fast", "textworld")
#: The engine ``ALFWorldEnv`` uses unless told otherwise (``backend="textworld"`` switches to the reference).
DEFAULT_BACKEND = "fast"


def make_engine(backend: str = DEFAULT_BACKEND) -> GameEngine:
    """Return a new engine for ALFWorld's games: ``"fast"`` or ``"textworld"`` (see :data:`BACKENDS`).

    Raises:
        ValueError: on another name.

    Example:
        >>> type(make_engine("fast")).__name__
        'FastALFWorldEngine'
    """
    if backend == "fast":
        return FastALFWorldEngine()
    if backend == "textworld":
        return TextWorldEngine(wrappers=[AlfredDemangler(shuffle=False)])
    close = difflib.get_close_matches(str(backend), BACKENDS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"`backend` should be one of {BACKENDS}. Received {backend!r}.{hint}")


class ALFWorldEnv(TextGameEnv):
    """ALFWorld's household text games (Shridhar et al., 2021) as a Gymnasium environment.

    Games are ALFWorld's ``game.tw-pddl`` files, played as TextWorld's PDDL engine with ALFWorld's demangler
    plays them (objects read "apple 1", as published ALFWorld agents see them), by the engine ``backend``
    names (:data:`BACKENDS`): ``"fast"``, the default, gives the same turns much faster, with constant-time
    :meth:`~prm_gym.envs.text_game_env.TextGameEnv.snapshot` / ``restore``; ``"textworld"`` is the reference,
    whose snapshots replay the commands since reset. An inadmissible or empty
    command returns "Nothing happens."; winning gives reward 1.0 and ends the episode. Register-time
    ``max_episode_steps`` is 30 (the AgentPRM paper's cap); ``gym.make(..., max_episode_steps=N)`` changes it.

    Besides :class:`~prm_gym.envs.text_game_env.TextGameEnv`'s keys, ``info`` has ``task`` (the goal
    sentence) and ``task_type`` (ALFWorld's name, e.g. ``"pick_clean_then_place_in_recep"``, read from the game's
    folder name; ``""`` for a game kept outside ALFWorld's folder layout). The game's gold commands are privileged:
    ``info["walkthrough"]`` is there only with ``privileged=("walkthrough",)``.

    ``backend="textworld"`` plays games with TextWorld's own engine, which evaluates a grammar's ``{expressions}``
    with Python's ``eval``: it trusts its game files (a crafted one runs code). The fast engine never calls ``eval``.

    Example:
        >>> import gymnasium as gym
        >>> import prm_gym
        >>> env = gym.make("prm_gym/ALFWorld-v0", split="tiny", task_types="look", privileged=("walkthrough",))
        >>> obs, info = env.reset(seed=0)
        >>> info["task_type"], info["task"] == obs.split("Your task is to: ")[1]
        ('look_at_obj_in_light', True)
        >>> for command in info["walkthrough"]:
        ...     obs, reward, terminated, truncated, info = env.step(command)
        >>> reward, terminated, info["won"]
        (1.0, True, True)
        >>> env.step("dance")[0]
        'Nothing happens.'

        Branching from a state (the ``fast`` backend restores in constant time):

        >>> env = gym.make("prm_gym/ALFWorld-v0", split="tiny", task_types="look", privileged="walkthrough")
        >>> obs, info = env.reset(seed=0)
        >>> saved = env.unwrapped.snapshot()
        >>> env.step(info["walkthrough"][0])[0] != obs
        True
        >>> env.unwrapped.restore(saved)[0] == obs
        True
    """

    def __init__(
        self,
        split: str = "valid_unseen",
        *,
        task_types: Iterable[str | int] | str | int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        game_files: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None,
        shuffle: bool = True,
        render_mode: str | None = None,
        backend: str = DEFAULT_BACKEND,
        privileged: str | Iterable[str] = (),
    ) -> None:
        """Create the env over a split's games (``game_files`` instead, when given), filtered by ``task_types``.

        ``game_files`` is one path or a list of them; ``backend`` names the engine (:data:`BACKENDS`); ``privileged``
        the privileged ``info`` entries to hand out (:data:`~prm_gym.envs.text_game_env.PRIVILEGED_INFO`).

        Raises:
            TypeError: when ``game_files`` is not a path or a list of paths.
            FileNotFoundError: naming the game files that do not exist.
            ValueError: naming a game file that is not an ALFWorld ``.tw-pddl`` game, or an unknown privileged entry.
        """
        engine = make_engine(backend)
        if game_files is None:
            game_files = list_games(split, data_dir=data_dir, task_types=task_types)
        game_files = game_file_list(game_files)
        others = [str(path) for path in game_files if path.suffix != ".tw-pddl"]
        if others:
            raise ValueError(
                f"ALFWorld-v0 plays ALFWorld's .tw-pddl games; play {others[0]!r} with prm_gym/TextWorld-v0 instead."
            )
        self.split = split
        self.backend = backend
        super().__init__(game_files, shuffle=shuffle, render_mode=render_mode, engine=engine, privileged=privileged)
        self._task = ""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an ALFWorld game (see :meth:`TextGameEnv.reset`)."""
        obs, info = super().reset(seed=seed, options=options)
        match = _TASK_PATTERN.search(obs)
        self._task = match.group(1).strip() if match else ""
        info["task"] = self._task
        return obs, info

    def _episode_state(self) -> tuple[Any, ...]:
        return (self._task,)

    def _set_episode_state(self, state: tuple[Any, ...]) -> None:
        (self._task,) = state

    def _extra_info(self, turn: GameTurn) -> dict[str, Any]:
        return {"task": self._task, "task_type": _task_type_name(str(self.engine.game_file))}


def _task_type_name(game_file: str) -> str:
    """Return the task type ALFWorld's folder layout gives a game (``<task_type>-.../<trial>/game.tw-pddl``), or ""."""
    try:
        return task_type_of_game_dir(os.path.basename(os.path.dirname(os.path.dirname(game_file)))).name
    except ValueError:
        return ""
