"""The Gymnasium environment shared by every text game: text in, text out, one game per episode.

:class:`TextGameEnv` holds the list of games, picks one per episode (seeded), drives a
:class:`~prm_gym.envs.engine.GameEngine`, builds ``info``, and snapshots and restores its state
(:class:`EnvSnapshot`). :class:`~prm_gym.envs.textworld_env.TextWorldEnv` and
:class:`~prm_gym.envs.alfworld.env.ALFWorldEnv` only say which games, which engine and which extra ``info``.
"""

from __future__ import annotations

import difflib
import os
import string
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from prm_gym.envs.engine import EngineSnapshot, GameEngine, GameTurn, TextWorldEngine
from prm_gym.envs.game_files import game_file_list
from prm_gym.envs.spaces import GameText

__all__ = [
    "TEXT_CHARSET",
    "ACTION_CHARSET",
    "MAX_OBSERVATION_LENGTH",
    "MAX_ACTION_LENGTH",
    "PRIVILEGED_INFO",
    "EnvSnapshot",
    "TextGameEnv",
    "privileged_names",
]

#: Characters ``observation_space.sample()`` draws from: printable ASCII, Latin-1 letters and typographic
#: punctuation, which covers ALFWorld's grammar and the text of TextWorld's generated games. Observations may hold
#: any character (any ``str`` is in the space, see :class:`~prm_gym.envs.spaces.GameText`).
TEXT_CHARSET: str = (
    string.printable + "".join(map(chr, range(0xA0, 0x180))) + "\u2018\u2019\u201c\u201d\u2013\u2014\u2026\u2022"
)
#: Longest observation ``observation_space.sample()`` draws, and the async vector env's slot size (longer ones go
#: through a queue); ALFWorld's are under 1,000 characters: 866 at most in a sample.
MAX_OBSERVATION_LENGTH = 8192
#: Characters of sampled actions: what a player types (printable ASCII, no control characters).
#: Any ``str`` is a valid action; see :meth:`TextGameEnv.step` for the rest.
ACTION_CHARSET: str = string.ascii_letters + string.digits + string.punctuation + " "
#: Longest sampled command (a Z-machine interpreter reads at most 198 bytes; a longer command is cut).
MAX_ACTION_LENGTH = 198
#: The privileged ``info`` entries an env hands out only when asked (``privileged=(...)``), as TextWorld's
#: ``EnvInfos`` does: ``"walkthrough"``, the game's gold commands (on reset and restore). They say how to win, so
#: an agent or a prompt built from ``info`` must not see them unless it is meant to be an oracle.
PRIVILEGED_INFO: tuple[str, ...] = ("walkthrough",)


@dataclass(frozen=True)
class EnvSnapshot:
    """A text-game env's state after a reset or step: immutable and picklable (see :meth:`TextGameEnv.snapshot`).

    Example:
        >>> from prm_gym.envs.alfworld import ALFWorldEnv
        >>> env = ALFWorldEnv("tiny", backend="fast")
        >>> obs, info = env.reset(seed=0)
        >>> _ = env.step("look")
        >>> snapshot = env.snapshot()
        >>> snapshot.steps, snapshot.invalid_action, snapshot.engine.turn.feedback == env.render()
        (1, False, True)
    """

    #: The engine's game state (its game file and the turn that led there included).
    engine: EngineSnapshot
    #: Whether the command that led here was inadmissible (False after a reset).
    invalid_action: bool
    #: Steps taken since the reset (what Gymnasium's ``TimeLimit`` had counted).
    steps: int
    #: The env subclass's own per-episode state (e.g. ALFWorld's task sentence).
    episode: tuple[Any, ...]


class TextGameEnv(gym.Env[str, str]):
    """A text game as a Gymnasium environment: observations and actions are strings.

    Each :meth:`reset` starts a game from ``game_files``: the next one in a seeded random order
    (``shuffle=True``) or in list order, or the one named by ``options={"game": index_or_path}``.
    Reward is the change in the game's score; ``terminated`` when the game is won or lost.
    ``info`` carries ``admissible_commands`` (sorted), ``game_file``, ``won``, ``lost``, ``score``,
    ``invalid_action`` (the command was not admissible). Privileged entries (:data:`PRIVILEGED_INFO`) are added
    only when asked for, by name: ``privileged=("walkthrough",)`` adds the game's gold commands to the ``info``
    of :meth:`reset` and :meth:`restore` (``gym.make(..., privileged=("walkthrough",))`` passes it on).
    Any string is an action (a game answers the ones it does not understand); an action that is not a
    string is not sent to the game: it is played as the empty command and flagged ``invalid_action``.
    A :meth:`reset` that fails on a bad ``options["game"]`` changes nothing; one that fails on a game file
    that cannot be played leaves the env needing a reset.

    :meth:`snapshot` and :meth:`restore` branch an episode from any state (through ``env.unwrapped`` or
    ``env.get_wrapper_attr``). Subclasses pick the games and the engine, add to ``info`` in :meth:`_extra_info`,
    and put any per-episode state of their own in snapshots through :meth:`_episode_state`.

    Example:
        >>> from prm_gym.envs.alfworld import list_games
        >>> env = TextGameEnv(list_games("tiny"), shuffle=False)
        >>> obs, info = env.reset()
        >>> obs, reward, terminated, truncated, info = env.step("dance")
        >>> obs, reward, info["invalid_action"]
        ('Nothing happens.', 0.0, True)
    """

    # Text has no frame rate; `render_fps` is declared because Gymnasium's checker asks every renderer for one.
    metadata = {"render_modes": ["ansi", "human"], "render_fps": 4}

    def __init__(
        self,
        game_files: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        *,
        shuffle: bool = True,
        render_mode: str | None = None,
        engine: GameEngine | None = None,
        privileged: str | Iterable[str] = (),
    ) -> None:
        """Create the environment over ``game_files``: one path, or a list of them (at least one).

        ``privileged`` names the privileged ``info`` entries to hand out (:data:`PRIVILEGED_INFO`); none by default.

        Raises:
            TypeError: when ``game_files`` is not a path or a list of paths.
            ValueError: when it is empty, ``render_mode`` is unknown, or ``privileged`` names an unknown entry.
            FileNotFoundError: naming the game files that do not exist.
        """
        self.privileged: tuple[str, ...] = privileged_names(privileged)
        paths = game_file_list(game_files)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            modes = self.metadata["render_modes"]
            raise ValueError(f"`render_mode` should be one of {modes}. Received {render_mode!r}.")
        self.game_files: list[Path] = paths
        self.shuffle = shuffle
        self.render_mode = render_mode
        self.engine: GameEngine = engine if engine is not None else TextWorldEngine()
        self.observation_space = GameText(max_length=MAX_OBSERVATION_LENGTH, min_length=0, charset=TEXT_CHARSET)
        self.action_space = GameText(max_length=MAX_ACTION_LENGTH, min_length=0, charset=ACTION_CHARSET)
        self._order: list[int] = []
        self._cursor = 0
        self._turn: GameTurn | None = None
        self._invalid_action = False
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start a game: the next in order, or ``options["game"]`` (an index into ``game_files`` or a path).

        Raises:
            ValueError: on a bad ``options["game"]`` (the episode goes on as before), or on a game file the
                engine cannot play (the env then needs a reset).
            FileNotFoundError: when the game file has gone (the env then needs a reset).
        """
        game = (options or {}).get("game")
        chosen = None if game is None else self._game_of_option(game)  # checked before anything changes
        super().reset(seed=seed)
        if seed is not None:
            self._order, self._cursor = [], 0
        game_file = chosen if chosen is not None else self._next_game()
        self._turn = None  # the old episode ends here: a failure below leaves the env needing a reset
        self.engine.load(game_file)
        turn = self.engine.reset()
        self._turn, self._invalid_action, self._steps = turn, False, 0
        return turn.feedback, self._reset_info(turn)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Send a command; an inadmissible one is still sent and flagged with ``info["invalid_action"]``.

        An action that is not a ``str`` (``None``, a number, ``bytes``...) is played as the empty command and
        flagged the same way, so that a bad action from an agent never kills a vector env's worker.
        """
        if self._turn is None:
            raise gym.error.ResetNeeded("Call `reset()` before `step()`.")
        command = action if isinstance(action, str) else ""
        if not isinstance(action, str):
            gym.logger.warn(f"Actions are command strings; {action!r} ({type(action).__name__}) is played as ''.")
        previous = self._turn
        self._turn = self.engine.step(command)
        self._steps += 1
        reward = self._turn.score - previous.score
        self._invalid_action = command.strip() not in previous.admissible_commands
        terminated = self._turn.won or self._turn.lost
        return self._turn.feedback, reward, terminated, False, self._info(self._turn, self._invalid_action)

    def snapshot(self) -> EnvSnapshot:
        """Return the env's state: the engine's game state and the env's own (immutable and picklable).

        :meth:`restore` puts it back, in this env or in any env of the same class (another process too: an
        ``AsyncVectorEnv`` sub-env gets one with ``envs.call("restore", snapshot)``). What a snapshot costs
        depends on the engine: the fast ALFWorld engine copies nothing (constant time); TextWorld's engine
        records the commands since reset and replays them on restore (O(steps since reset)).

        Raises:
            gymnasium.error.ResetNeeded: before the first :meth:`reset`.
        """
        if self._turn is None:
            raise gym.error.ResetNeeded("Call `reset()` before `snapshot()`.")
        return EnvSnapshot(self.engine.snapshot(), self._invalid_action, self._steps, self._episode_state())

    def restore(self, snapshot: EnvSnapshot) -> tuple[str, dict[str, Any]]:
        """Put the env back in a :meth:`snapshot`'s state; return its observation and ``info``, as :meth:`reset` does.

        ``info`` is the one the reset or step that reached the state returned (its ``invalid_action`` included),
        plus the privileged entries the env was asked for, as on reset. The game is loaded first when the env was
        on another one. The episode continues from there: the next :meth:`step` plays from the restored state; the
        order of games for later resets and the env's random generator are not part of the state and are left as
        they are.

        Gymnasium's ``TimeLimit`` (added by ``gym.make``) counts steps outside the env, and ``restore`` does not
        rewind its counter. An estimator that branches rollouts should restore through ``env.unwrapped`` and cap
        each rollout itself, at ``max_episode_steps - snapshot.steps`` steps (``steps`` counts from the reset, as
        ``TimeLimit`` does); or ``reset`` the wrapped env before each ``restore``, which sets the counter to 0 (the
        branch then gets a whole ``max_episode_steps``, at the cost of a reset).

        Raises:
            TypeError: when ``snapshot`` is not an :class:`EnvSnapshot`.
        """
        if not isinstance(snapshot, EnvSnapshot):
            raise TypeError(f"`restore` takes an EnvSnapshot from `snapshot()`. Received {type(snapshot).__name__}.")
        self._turn = None  # a failure below leaves the env needing a reset
        self.engine.load(snapshot.engine.game_file)
        self._turn = self.engine.restore(snapshot.engine)
        self._invalid_action, self._steps = snapshot.invalid_action, snapshot.steps
        self._set_episode_state(snapshot.episode)
        return self._turn.feedback, self._reset_info(self._turn)

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

    def _next_game(self) -> Path:
        """Return the next game in the (seeded) order, starting a new pass when one ends."""
        if self._cursor >= len(self._order):
            indices = list(range(len(self.game_files)))
            self._order = [int(i) for i in self.np_random.permutation(indices)] if self.shuffle else indices
            self._cursor = 0
        self._cursor += 1
        return self.game_files[self._order[self._cursor - 1]]

    def _game_of_option(self, game: object) -> Path:
        """Return the game ``options["game"]`` names (an index into ``game_files`` or a path), or raise ValueError."""
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

    def _reset_info(self, turn: GameTurn) -> dict[str, Any]:
        """Return ``info`` after a reset or restore: a step's, plus the privileged entries asked for."""
        info = self._info(turn, self._invalid_action)
        if "walkthrough" in self.privileged:
            info["walkthrough"] = list(self.engine.walkthrough or [])
        return info

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

    def _episode_state(self) -> tuple[Any, ...]:
        """Return the subclass's per-episode state, for snapshots (immutable); the base class has none."""
        return ()

    def _set_episode_state(self, state: tuple[Any, ...]) -> None:
        """Put back what :meth:`_episode_state` returned."""


def privileged_names(privileged: str | Iterable[str]) -> tuple[str, ...]:
    """Check the names of privileged ``info`` entries asked for (one name, or several) and return them as a tuple.

    Raises:
        TypeError: when ``privileged`` is not a name or an iterable of names.
        ValueError: naming an entry that is not in :data:`PRIVILEGED_INFO` (with the closest one, if any).

    Example:
        >>> privileged_names("walkthrough"), privileged_names(())
        (('walkthrough',), ())
    """
    if isinstance(privileged, str):
        names: tuple[object, ...] = (privileged,)
    elif isinstance(privileged, Iterable):
        names = tuple(privileged)
    else:
        raise TypeError(f"`privileged` should be a name or names of info entries, e.g. ('walkthrough',). Received "
                        f"{privileged!r}.")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"`privileged` should name info entries (str). Received {name!r}.")
        if name not in PRIVILEGED_INFO:
            close = difflib.get_close_matches(name, PRIVILEGED_INFO, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"Unknown privileged info {name!r}: `privileged` can ask for {PRIVILEGED_INFO}.{hint}")
    return tuple(dict.fromkeys(str(name) for name in names))
