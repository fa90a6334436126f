"""The fast ALFWorld engine: TextWorld's turns for ALFWorld's ``.tw-pddl`` games, faster, with state snapshots.

:class:`FastALFWorldEngine` returns the same :class:`~prm_gym.envs.engine.GameTurn` as
``TextWorldEngine(wrappers=[AlfredDemangler(shuffle=False)])`` at every reset and step (feedback text,
admissible commands, score, won, lost), checked game by game by ``benchmarks/fast_engine_parity.py``.
It differs in cost:

- the domain is parsed once per process and each game is grounded in Python (no fast_downward translator run
  at every reset); grammar strings are parsed once per process (no TatSu parse at every step);
- a state is a pair of frozensets, so :meth:`~FastALFWorldEngine.snapshot` and
  :meth:`~FastALFWorldEngine.restore` take constant time and a snapshot is immutable and picklable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from prm_gym.envs.alfworld.fast.atoms import Atom
from prm_gym.envs.alfworld.fast.game import GameState, LoadedGame, load_game
from prm_gym.envs.alfworld.fast.sas import GroundOperator
from prm_gym.envs.engine import EngineSnapshot, GameEngine, GameTurn

__all__ = ["NOTHING_HAPPENS", "FastALFWorldEngine", "FastSnapshot"]

#: PddlEnv's feedback for a command that is not admissible.
NOTHING_HAPPENS = "Nothing happens."


@dataclass(frozen=True)
class FastSnapshot(EngineSnapshot):
    """A fast engine's state after some turn: immutable, picklable, restorable in any engine on the same game.

    Example:
        >>> import pickle
        >>> from prm_gym.envs.alfworld.data import list_games
        >>> engine = FastALFWorldEngine()
        >>> engine.load(list_games("tiny")[0])
        >>> start = engine.reset()
        >>> snapshot = pickle.loads(pickle.dumps(engine.snapshot()))
        >>> other = FastALFWorldEngine()
        >>> other.load(list_games("tiny")[0])
        >>> other.restore(snapshot) == start
        True
    """

    #: fast_downward's view: the fluent atoms that hold.
    true_state: frozenset[Atom]
    #: TextWorld's fact set (fluent part), ``not_`` facts included.
    text_state: frozenset[Atom]
    #: Admissible commands and the operator each one applies, in the engine's order.
    commands: tuple[tuple[str, GroundOperator], ...]


class FastALFWorldEngine(GameEngine):
    """Plays ALFWorld ``.tw-pddl`` games like ``TextWorldEngine`` with ALFWorld's demangler, only faster.

    Same interface as :class:`~prm_gym.envs.engine.TextWorldEngine`; its snapshots copy the state instead of
    replaying commands. Only ALFWorld's PDDL games are supported (no Z-machine/Glulx files): :meth:`load`
    raises ``ValueError`` on anything else. Where it could differ from TextWorld, in cases ALFWorld's games do
    not have: a game file without a walkthrough gets ``walkthrough = None`` (TextWorld asks fast_downward's
    planner for one); and if two operators with different effects derived the same command, TextWorld would
    apply the first in fast_downward's successor-generator order, this engine the first by operator name.

    Example:
        >>> from prm_gym.envs.alfworld.data import list_games
        >>> engine = FastALFWorldEngine()
        >>> engine.load(list_games("tiny")[0])
        >>> turn = engine.reset()
        >>> turn.feedback.startswith("-= Welcome to TextWorld, ALFRED! =-")
        True
        >>> saved = engine.snapshot()
        >>> engine.step("dance").feedback
        'Nothing happens.'
        >>> engine.restore(saved) == turn
        True
    """

    snapshot_type = FastSnapshot

    def __init__(self) -> None:
        """Create an engine with no game loaded."""
        super().__init__()
        self._game: LoadedGame | None = None
        self._state: GameState | None = None
        self._lookup: dict[str, GroundOperator] | None = None

    def reset(self) -> GameTurn:
        """Start the loaded game from its initial state."""
        game = self._require_game()
        self.walkthrough = list(game.walkthrough) if game.walkthrough else None
        return self._set_state(game.start())

    def step(self, command: str) -> GameTurn:
        """Send one command to the game; an inadmissible one reads "Nothing happens." and changes nothing."""
        game = self._require_game()
        state = self._state
        if state is None:
            raise RuntimeError("The game has not started: call `reset()` first.")
        lookup = self._lookup
        if lookup is None:
            lookup = self._lookup = dict(state.commands)
        op = lookup.get(command.strip())
        if op is None:
            # PddlEnv recomputes the turn in the same state: same commands and goal, the score follows the goal.
            previous = state.turn
            turn = GameTurn(NOTHING_HAPPENS, previous.admissible_commands, float(previous.won), previous.won, False)
            self._state = state._replace(turn=turn)
            return turn
        true_state, text_state = game.logic.apply(op, state.true_state, state.text_state)
        feedback = game.feedback(op, text_state)
        # The goal only reads some predicates: when the command changed none of them, it holds as before.
        won = None if not game.logic.goal.predicates.isdisjoint(op.predicates) else state.turn.won
        return self._set_state(game.state_after(feedback, true_state, text_state, score=True, won=won))

    def snapshot(self) -> FastSnapshot:
        """Capture the current state, for :meth:`restore` here or in any fast engine that loaded the same game.

        Raises:
            RuntimeError: before the first :meth:`reset`.
        """
        state = self._state
        if state is None or self._game_file is None:
            raise RuntimeError("Nothing to snapshot: call `reset()` first.")
        return FastSnapshot(self._game_file, state.turn, state.true_state, state.text_state, state.commands)

    def _restore(self, snapshot: FastSnapshot) -> GameTurn:
        game = self._require_game()
        if self.walkthrough is None and game.walkthrough:
            self.walkthrough = list(game.walkthrough)
        return self._set_state(GameState(snapshot.true_state, snapshot.text_state, snapshot.turn, snapshot.commands))

    def _open(self, game_file: str) -> None:
        self._game = load_game(os.path.abspath(game_file))
        self._state = None
        self._lookup = None

    def _close(self) -> None:
        self._game = None
        self._state = None
        self._lookup = None

    def _set_state(self, state: GameState) -> GameTurn:
        self._state = state
        self._lookup = None
        return state.turn

    def _require_game(self) -> LoadedGame:
        if self._game is None:
            raise RuntimeError("No game loaded: call `load(game_file)` first.")
        return self._game
