"""The game engine behind the text-game environments: TextWorld's own interpreters.

:class:`TextWorldEngine` plays one game file at a time with TextWorld (Z-machine/Glulx games through
Jericho, ``.tw-pddl`` games through TextWorld's PDDL environment, which is ALFWorld's text engine) and
hands back each turn as an immutable :class:`GameTurn`. The Gymnasium environments only see this class.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import textworld

__all__ = ["GameTurn", "TextWorldEngine"]

#: Jericho's input buffer for Z-machine/Glulx games, in bytes.
_PARSER_INPUT_BYTES = 198


@dataclass(frozen=True)
class GameTurn:
    """What the game says after a reset or a command."""

    #: The game's text.
    feedback: str
    #: Commands the game accepts in this state, sorted and without duplicates.
    admissible_commands: tuple[str, ...]
    #: Score so far (ALFWorld: 1 once won, else 0).
    score: float
    #: Whether the player has won.
    won: bool
    #: Whether the player has lost.
    lost: bool


class TextWorldEngine:
    """Plays text-game files with TextWorld's engines, loading a file only when it changes.

    Example:
        >>> from prm_gym.envs.alfworld.data import list_games
        >>> engine = TextWorldEngine()
        >>> engine.load(list_games("tiny")[0])
        >>> engine.reset().feedback.startswith("-= Welcome to TextWorld, ALFRED! =-")
        True
    """

    def __init__(self, wrappers: Sequence[Callable[..., Any]] = ()) -> None:
        """Create an engine; ``wrappers`` are TextWorld wrappers applied to every game (e.g. ALFWorld's demangler)."""
        self._wrappers = list(wrappers)
        self._env: textworld.Environment | None = None
        self._game_file: str | None = None
        self._reads_parser_input = False
        self._infos = textworld.EnvInfos(
            admissible_commands=True, won=True, lost=True, score=True, max_score=True, objective=True,
            extras=["walkthrough"],
        )
        self.walkthrough: list[str] | None = None
        self.objective: str | None = None
        self.max_score: float | None = None

    @property
    def game_file(self) -> str | None:
        """The game file loaded last."""
        return self._game_file

    def load(self, game_file: str | os.PathLike[str]) -> None:
        """Load a game file (a no-op when it is already loaded)."""
        game_file = os.fspath(game_file)
        if game_file == self._game_file:
            return
        if not os.path.isfile(game_file):
            raise FileNotFoundError(f"Game file {game_file!r} does not exist.")
        if self._env is not None:
            self._env.close()
        self._env = textworld.start(game_file, self._infos, wrappers=self._wrappers)
        self._game_file = game_file
        self._reads_parser_input = not game_file.endswith(".tw-pddl")

    def reset(self) -> GameTurn:
        """Start the loaded game from its initial state."""
        state = self._require_env().reset()
        self.walkthrough = _walkthrough(state)
        self.objective = state.get("objective")
        self.max_score = state.get("max_score")
        return _turn(state)

    def step(self, command: str) -> GameTurn:
        """Send one command to the game."""
        env = self._require_env()
        if self._reads_parser_input:
            command = _as_parser_input(command)
        state, _, _ = env.step(command)
        return _turn(state)

    def close(self) -> None:
        """Release the interpreter."""
        if self._env is not None:
            self._env.close()
        self._env = None
        self._game_file = None

    def _require_env(self) -> textworld.Environment:
        if self._env is None:
            raise RuntimeError("No game loaded: call `load(game_file)` first.")
        return self._env


def _as_parser_input(command: str) -> str:
    """One line for an interpreter's parser.

    Control characters and backslashes (dumb-frotz's escape character) become spaces, and the command is
    cut, at a character boundary, to the interpreter's input buffer (Jericho fails on a split character).
    """
    line = "".join(" " if ord(c) < 32 or ord(c) == 127 or c == "\\" else c for c in command)
    return line.encode("utf-8")[:_PARSER_INPUT_BYTES].decode("utf-8", "ignore")


def _walkthrough(state: textworld.GameState) -> list[str] | None:
    walkthrough = state.get("extra.walkthrough")
    return list(walkthrough) if walkthrough else None


def _turn(state: textworld.GameState) -> GameTurn:
    return GameTurn(
        feedback=state.feedback,
        admissible_commands=tuple(sorted(set(state.get("admissible_commands") or ()))),
        score=float(state.get("score") or 0),
        won=bool(state.get("won")),
        lost=bool(state.get("lost")),
    )
