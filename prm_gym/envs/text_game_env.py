"""The Gymnasium environment shared by every text game: text in, text out, one game per episode.

:class:`TextGameEnv` holds the list of games, picks one per episode (seeded), drives a
:class:`~prm_gym.envs.engine.TextWorldEngine` and builds ``info``. :class:`~prm_gym.envs.textworld_env.TextWorldEnv`
and :class:`~prm_gym.envs.alfworld.env.ALFWorldEnv` only say which games and which extra ``info``.
"""

from __future__ import annotations

import os
import string
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from prm_gym.envs.engine import GameTurn, TextWorldEngine
from prm_gym.envs.spaces import GameText

__all__ = ["TEXT_CHARSET", "ACTION_CHARSET", "MAX_OBSERVATION_LENGTH", "MAX_ACTION_LENGTH", "TextGameEnv"]

#: Characters of observations and actions: printable ASCII, Latin-1 letters and typographic punctuation,
#: which covers ALFWorld's grammar and the text of TextWorld's generated games.
TEXT_CHARSET: str = (
    string.printable + "".join(map(chr, range(0xA0, 0x180))) + "\u2018\u2019\u201c\u201d\u2013\u2014\u2026\u2022"
)
#: Longest observation the observation space admits (ALFWorld's are under 1,000 characters: 866 at most in a sample).
MAX_OBSERVATION_LENGTH = 8192
#: Characters of sampled actions: what a player types (printable ASCII, no control characters).
ACTION_CHARSET: str = string.ascii_letters + string.digits + string.punctuation + " "
#: Longest command the action space admits (a Z-machine interpreter reads at most 198 bytes).
MAX_ACTION_LENGTH = 198


class TextGameEnv(gym.Env[str, str]):
    """A text game as a Gymnasium environment: observations and actions are strings.

    Each :meth:`reset` starts a game from ``game_files``: the next one in a seeded random order
    (``shuffle=True``) or in list order, or the one named by ``options={"game": index_or_path}``.
    Reward is the change in the game's score; ``terminated`` when the game is won or lost.
    ``info`` carries ``admissible_commands`` (sorted), ``game_file``, ``won``, ``lost``, ``score``,
    ``invalid_action`` (the command was not admissible) and, on reset, the game's ``walkthrough``.

    Subclasses pick the games and the engine's wrappers, and add to ``info`` in :meth:`_extra_info`.
    """

    # Text has no frame rate; `render_fps` is declared because Gymnasium's checker asks every renderer for one.
    metadata = {"render_modes": ["ansi", "human"], "render_fps": 4}

    def __init__(
        self,
        game_files: Sequence[str | os.PathLike[str]],
        *,
        shuffle: bool = True,
        render_mode: str | None = None,
        engine: TextWorldEngine | None = None,
    ) -> None:
        """Create the environment over ``game_files`` (at least one)."""
        if not game_files:
            raise ValueError("`game_files` is empty: pass at least one game file.")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            modes = self.metadata["render_modes"]
            raise ValueError(f"`render_mode` should be one of {modes}. Received {render_mode!r}.")
        self.game_files: list[Path] = [Path(p) for p in game_files]
        self.shuffle = shuffle
        self.render_mode = render_mode
        self.engine = engine if engine is not None else TextWorldEngine()
        self.observation_space = GameText(max_length=MAX_OBSERVATION_LENGTH, min_length=0, charset=TEXT_CHARSET)
        self.action_space = GameText(max_length=MAX_ACTION_LENGTH, min_length=0, charset=ACTION_CHARSET)
        self._order: list[int] = []
        self._cursor = 0
        self._turn: GameTurn | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start a game: the next in order, or ``options["game"]`` (an index into ``game_files`` or a path)."""
        super().reset(seed=seed)
        if seed is not None:
            self._order, self._cursor = [], 0
        game_file = self._choose_game((options or {}).get("game"))
        self.engine.load(game_file)
        self._turn = self.engine.reset()
        info = self._info(self._turn, invalid_action=False)
        info["walkthrough"] = list(self.engine.walkthrough or [])
        return self._turn.feedback, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Send a command; an inadmissible one is still sent and flagged with ``info["invalid_action"]``."""
        if self._turn is None:
            raise gym.error.ResetNeeded("Call `reset()` before `step()`.")
        if not isinstance(action, str):
            raise gym.error.InvalidAction(
                f"Actions are command strings. Received {action!r} of type {type(action).__name__}."
            )
        previous = self._turn
        self._turn = self.engine.step(action)
        reward = self._turn.score - previous.score
        invalid = action.strip() not in previous.admissible_commands
        return self._turn.feedback, reward, self._turn.won or self._turn.lost, False, self._info(self._turn, invalid)

    def render(self) -> str | None:
        """``ansi``: return the last text; ``human``: write it to stdout."""
        text = "" if self._turn is None else self._turn.feedback
        if self.render_mode == "human":
            sys.stdout.write(text + "\n")
            return None
        return text

    def close(self) -> None:
        """Release the game engine."""
        self.engine.close()

    def _choose_game(self, game: int | str | os.PathLike[str] | None) -> Path:
        if game is None:
            if self._cursor >= len(self._order):
                indices = list(range(len(self.game_files)))
                self._order = [int(i) for i in self.np_random.permutation(indices)] if self.shuffle else indices
                self._cursor = 0
            self._cursor += 1
            return self.game_files[self._order[self._cursor - 1]]
        if isinstance(game, (int, np.integer)) and not isinstance(game, bool):
            if not 0 <= game < len(self.game_files):
                raise ValueError(
                    f"`options['game']` index {game} is out of range: this env has {len(self.game_files)} games."
                )
            return self.game_files[int(game)]
        if isinstance(game, (str, os.PathLike)) and Path(game).is_file():
            return Path(game)
        raise ValueError(
            f"`options['game']` should be an index into `game_files` or a game file path. Received {game!r}."
        )

    def _info(self, turn: GameTurn, invalid_action: bool) -> dict[str, Any]:
        info: dict[str, Any] = {
            "admissible_commands": list(turn.admissible_commands),
            "game_file": str(self.engine.game_file),
            "won": turn.won,
            "lost": turn.lost,
            "score": turn.score,
            "invalid_action": invalid_action,
        }
        info.update(self._extra_info(turn))
        return info

    def _extra_info(self, turn: GameTurn) -> dict[str, Any]:
        """Game-family-specific ``info`` entries; the base class adds none."""
        return {}
