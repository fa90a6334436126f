"""``prm_gym/TextWorld-v0``: any game TextWorld plays (``.z1``-``.z8``, ``.tw-pddl``, ``.json``) as a Gymnasium env."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from prm_gym.envs.engine import GameTurn
from prm_gym.envs.game_files import game_file_list, game_format
from prm_gym.envs.text_game_env import TextGameEnv

__all__ = ["TextWorldEnv"]


class TextWorldEnv(TextGameEnv):
    """Games made with TextWorld (or any game its engines play) as a Gymnasium environment.

    Rewards are score increments; ``terminated`` when the game is won or lost. ``info`` has the keys of
    :class:`~prm_gym.envs.text_game_env.TextGameEnv` plus ``task`` (the game's objective, "" when it has
    none) and ``max_score``; ``walkthrough`` only with ``privileged=("walkthrough",)``. Commands outside
    ``admissible_commands`` still reach the game's parser.
    Game files are checked before the interpreter opens them (a corrupt one raises ``ValueError`` naming it), but
    TextWorld runs their code and grammars as they are: play only game files you trust.

    Example:
        >>> import gymnasium as gym
        >>> import prm_gym
        >>> from prm_gym.envs.alfworld import list_games
        >>> env = gym.make("prm_gym/TextWorld-v0", game_files=list_games("tiny", task_types="pick"))
        >>> obs, info = env.reset(seed=0)
        >>> sorted(info)[:4]
        ['admissible_commands', 'game_file', 'invalid_action', 'lost']
    """

    def __init__(
        self,
        game_files: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        *,
        shuffle: bool = True,
        render_mode: str | None = None,
        privileged: str | Iterable[str] = (),
    ) -> None:
        """Create the env over one game file or a list of them.

        ``privileged`` names the privileged ``info`` entries to hand out
        (:data:`~prm_gym.envs.text_game_env.PRIVILEGED_INFO`); none by default.

        Raises:
            FileNotFoundError: naming the game files that do not exist.
            ValueError: naming a file that is not of a format TextWorld plays (e.g. a Glulx ``.ulx`` game), or an
                unknown privileged entry.
        """
        paths = game_file_list(game_files)
        for path in paths:
            game_format(path)
        super().__init__(paths, shuffle=shuffle, render_mode=render_mode, privileged=privileged)

    def _extra_info(self, turn: GameTurn) -> dict[str, Any]:
        return {"task": self.engine.objective or "", "max_score": self.engine.max_score}
