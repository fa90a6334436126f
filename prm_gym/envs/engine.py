"""The game engines behind the text-game environments, and what they share.

:class:`GameEngine` is the interface the Gymnasium environments drive: load a game file, reset, step with a
command, each turn handed back as an immutable :class:`GameTurn`, and :meth:`~GameEngine.snapshot` /
:meth:`~GameEngine.restore` of the game state. :class:`TextWorldEngine` plays games with TextWorld's own
interpreters (Z-machine/Glulx games through Jericho, ``.tw-pddl`` games through TextWorld's PDDL
environment, which is ALFWorld's text engine); it cannot copy its state, so its snapshots replay the commands
since reset. ALFWorld's fast engine (:class:`~prm_gym.envs.alfworld.fast.FastALFWorldEngine`) copies its state.

Trust: :class:`TextWorldEngine` trusts its game files as TextWorld does. TextWorld evaluates the
``{expression}`` symbols of a ``.tw-pddl`` grammar with Python's ``eval`` (a crafted file runs any code), and a
Z-machine story's code runs in Jericho's interpreter, in this process. Files are checked first
(:func:`~prm_gym.envs.game_files.check_game_file`), so that a corrupt one raises a ``ValueError`` instead of
ending the process, but play only files you trust with this engine; the fast ALFWorld engine never calls ``eval``.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import textworld

from prm_gym.envs.game_files import check_game_file

__all__ = ["EngineSnapshot", "GameEngine", "GameTurn", "ReplaySnapshot", "TextWorldEngine"]

#: Jericho's input buffer for Z-machine/Glulx games, in bytes.
_PARSER_INPUT_BYTES = 198


@dataclass(frozen=True)
class GameTurn:
    """What the game says after a reset or a command.

    Example:
        >>> turn = GameTurn("Nothing happens.", ("go to desk 1", "look"), 0.0, False, False)
        >>> turn.won or turn.lost
        False
    """

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


@dataclass(frozen=True)
class EngineSnapshot:
    """An engine's game state after some turn: immutable and picklable; each engine extends it.

    Example:
        >>> from prm_gym.envs.alfworld.data import list_games
        >>> engine = TextWorldEngine()
        >>> engine.load(list_games("tiny")[0])
        >>> turn = engine.reset()
        >>> snapshot = engine.snapshot()
        >>> snapshot.turn == turn, snapshot.game_file == engine.game_file
        (True, True)
    """

    #: The game file, as it was passed to :meth:`GameEngine.load`.
    game_file: str
    #: The turn that led to this state (what :meth:`GameEngine.restore` returns).
    turn: GameTurn


@dataclass(frozen=True)
class ReplaySnapshot(EngineSnapshot):
    """A state as the commands that lead to it from the reset (for engines that cannot copy their state).

    Example:
        >>> from prm_gym.envs.alfworld.data import list_games
        >>> engine = TextWorldEngine()
        >>> engine.load(list_games("tiny")[0])
        >>> _ = engine.reset(), engine.step("look"), engine.step("dance")
        >>> engine.snapshot().commands
        ('look', 'dance')
    """

    #: The commands sent since the last reset, in order.
    commands: tuple[str, ...]


class GameEngine(abc.ABC):
    """Plays one game file at a time; each reset and step returns a :class:`GameTurn`.

    Subclasses open a game in :meth:`_open`, play it in :meth:`reset` and :meth:`step`, and capture and put
    back its state in :meth:`snapshot` and :meth:`_restore`; :meth:`load` and :meth:`restore` check their
    arguments here, once for every engine.

    Example:
        >>> from prm_gym.envs.alfworld.data import list_games
        >>> engine: GameEngine = TextWorldEngine()
        >>> engine.load(list_games("tiny")[0])
        >>> start = engine.reset()
        >>> saved = engine.snapshot()
        >>> engine.step(start.admissible_commands[0]).feedback != start.feedback
        True
        >>> engine.restore(saved) == start
        True
    """

    #: The type of the snapshots this engine takes and restores.
    snapshot_type: ClassVar[type[EngineSnapshot]] = EngineSnapshot

    def __init__(self) -> None:
        """Create an engine with no game loaded."""
        self._game_file: str | None = None
        #: The loaded game's walkthrough (set by :meth:`reset`), None when it has none.
        self.walkthrough: list[str] | None = None
        #: The loaded game's objective (set by :meth:`reset`), None when it has none.
        self.objective: str | None = None
        #: The loaded game's maximum score (set by :meth:`reset`), None when it has none.
        self.max_score: float | None = None

    @property
    def game_file(self) -> str | None:
        """The game file loaded last."""
        return self._game_file

    def load(self, game_file: str | os.PathLike[str]) -> None:
        """Load a game file (a no-op when it is already loaded); after a failed load no game is loaded.

        Raises:
            FileNotFoundError: when ``game_file`` does not exist.
            ValueError: when it is not a game this engine plays, naming it.
        """
        game_file = os.fspath(game_file)
        if game_file == self._game_file:
            return
        if not os.path.isfile(game_file):
            raise FileNotFoundError(f"Game file {game_file!r} does not exist.")
        try:
            self._open(game_file)
        except BaseException:
            self.close()  # never half a game: the old one may already be closed
            raise
        self._game_file = game_file

    @abc.abstractmethod
    def reset(self) -> GameTurn:
        """Start the loaded game from its initial state."""

    @abc.abstractmethod
    def step(self, command: str) -> GameTurn:
        """Send one command to the game."""

    @abc.abstractmethod
    def snapshot(self) -> EngineSnapshot:
        """Capture the current state, for :meth:`restore` here or in another engine of the same kind.

        Raises:
            RuntimeError: before the first :meth:`reset`.
        """

    def restore(self, snapshot: EngineSnapshot) -> GameTurn:
        """Go back to a snapshot's state; return the turn that led to it.

        The snapshot's game must be the loaded one (:meth:`load` it first).

        Raises:
            TypeError: when ``snapshot`` is not one of this engine's snapshots.
            ValueError: when it was taken on another game than the one loaded.
        """
        if not isinstance(snapshot, self.snapshot_type):
            raise TypeError(
                f"{type(self).__name__} restores {self.snapshot_type.__name__}s. Received {type(snapshot).__name__}."
            )
        if self._game_file is None or os.path.abspath(snapshot.game_file) != os.path.abspath(self._game_file):
            raise ValueError(
                f"The snapshot was taken on {snapshot.game_file!r} but the loaded game is {self._game_file!r}: "
                "`load` the snapshot's game first."
            )
        return self._restore(snapshot)

    def close(self) -> None:
        """Release the loaded game."""
        self._close()
        self._game_file = None

    @abc.abstractmethod
    def _open(self, game_file: str) -> None:
        """Open ``game_file`` (an existing file, not the one loaded), replacing the loaded game."""

    @abc.abstractmethod
    def _restore(self, snapshot: Any) -> GameTurn:
        """Put back a snapshot of the loaded game (already checked by :meth:`restore`)."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Release what :meth:`_open` holds."""


class TextWorldEngine(GameEngine):
    """Plays text-game files with TextWorld's engines, loading a file only when it changes.

    TextWorld cannot copy a game's state: :meth:`snapshot` records the commands sent since the last reset,
    and :meth:`restore` resets the game and replays them, so restoring costs as much as playing those steps
    again (O(steps since reset); about 0.1 s a step on ALFWorld's games).

    Example:
        >>> from prm_gym.envs.alfworld.data import list_games
        >>> engine = TextWorldEngine()
        >>> engine.load(list_games("tiny")[0])
        >>> engine.reset().feedback.startswith("-= Welcome to TextWorld, ALFRED! =-")
        True
    """

    snapshot_type = ReplaySnapshot

    def __init__(self, wrappers: Sequence[Callable[..., Any]] = ()) -> None:
        """Create an engine; ``wrappers`` are TextWorld wrappers applied to every game (e.g. ALFWorld's demangler)."""
        super().__init__()
        self._wrappers = list(wrappers)
        self._env: textworld.Environment | None = None
        self._reads_parser_input = False
        self._infos = textworld.EnvInfos(
            admissible_commands=True, won=True, lost=True, score=True, max_score=True, objective=True,
            extras=["walkthrough"],
        )
        self._commands: list[str] = []
        self._turn: GameTurn | None = None

    def reset(self) -> GameTurn:
        """Start the loaded game from its initial state.

        Raises:
            ValueError: when TextWorld cannot start the game (naming the file).
        """
        env = self._require_env()
        try:
            state = env.reset()
            walkthrough = _walkthrough(state)
        except Exception as error:  # TextWorld reads much of a game only now: name the file, not its parser
            raise _unplayable(self._game_file, error) from error
        self.walkthrough = walkthrough
        self.objective = state.get("objective")
        self.max_score = state.get("max_score")
        self._commands = []
        self._turn = _turn(state)
        return self._turn

    def step(self, command: str) -> GameTurn:
        """Send one command to the game."""
        env = self._require_env()
        if self._turn is None:
            raise RuntimeError("The game has not started: call `reset()` first.")
        state, _, _ = env.step(_as_parser_input(command) if self._reads_parser_input else command)
        self._commands.append(command)
        self._turn = _turn(state)
        return self._turn

    def snapshot(self) -> ReplaySnapshot:
        """Capture the current state as the commands sent since the last reset."""
        if self._turn is None or self._game_file is None:
            raise RuntimeError("Nothing to snapshot: call `reset()` first.")
        return ReplaySnapshot(self._game_file, self._turn, tuple(self._commands))

    def _restore(self, snapshot: ReplaySnapshot) -> GameTurn:
        turn = self.reset()
        for command in snapshot.commands:
            turn = self.step(command)
        if turn != snapshot.turn:
            raise RuntimeError(
                f"Replaying {len(snapshot.commands)} commands on {snapshot.game_file!r} did not reach the snapshot's "
                "state: the game is not deterministic."
            )
        return turn

    def _open(self, game_file: str) -> None:
        check_game_file(game_file)  # before anything else: Jericho ends the process on a file it cannot read
        self._close()
        try:
            self._env = textworld.start(game_file, self._infos, wrappers=self._wrappers)
        except Exception as error:
            raise _unplayable(game_file, error) from error
        self._reads_parser_input = not game_file.endswith(".tw-pddl")

    def _close(self) -> None:
        if self._env is not None:
            self._env.close()
        self._env = None
        self._commands = []
        self._turn = None

    def _require_env(self) -> textworld.Environment:
        if self._env is None:
            raise RuntimeError("No game loaded: call `load(game_file)` first.")
        return self._env


def _as_parser_input(command: str) -> str:
    r"""One line for an interpreter's parser.

    Control characters and backslashes (dumb-frotz's escape character) become spaces, characters UTF-8 cannot
    encode (lone surrogates) become ``?``, and the command is cut, at a character boundary, to the interpreter's
    input buffer (Jericho fails on a split character).

    Example:
        >>> _as_parser_input("go to \ud800\n" + "x" * 300) == "go to ? " + "x" * 190
        True
    """
    line = "".join(" " if ord(c) < 32 or ord(c) == 127 or c == "\\" else c for c in command)
    return line.encode("utf-8", "replace")[:_PARSER_INPUT_BYTES].decode("utf-8", "ignore")


def _unplayable(game_file: str | None, error: Exception) -> ValueError:
    """TextWorld's error on a game file, as one message naming the file (and the .json TextWorld reads beside it)."""
    beside = ""
    if game_file and game_file.endswith(".z8"):
        beside = f" (or the TextWorld metadata {os.path.splitext(game_file)[0] + '.json'!r} beside it)"
    first_line = (str(error).strip().splitlines() or [""])[0]
    return ValueError(f"TextWorld cannot play {game_file!r}{beside}: {type(error).__name__}: {first_line}")


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
