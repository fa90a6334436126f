"""Games loaded for the fast engine: grounded, their text compiled, cached per process.

A :class:`LoadedGame` holds everything about a game that does not change while it is played (operators,
grammar, entity names, caches of derived command texts); :class:`GameState` is what does. Several engines on
one game share its :class:`LoadedGame` through :func:`load_game`'s cache.
"""

from __future__ import annotations

import functools
import gc
import os
from typing import NamedTuple

from prm_gym.envs.alfworld.fast.atoms import Atom, negated
from prm_gym.envs.alfworld.fast.grammar import Nodes, Var, compile_grammar
from prm_gym.envs.alfworld.fast.grounding import GroundGame
from prm_gym.envs.alfworld.fast.pddl import load_game_json, parse_domain
from prm_gym.envs.alfworld.fast.sas import GroundOperator
from prm_gym.envs.alfworld.fast.text import TextGenerator, mapping_of
from prm_gym.envs.engine import GameTurn

__all__ = ["GAME_CACHE_SIZE", "GameState", "LoadedGame", "clear_game_cache", "load_game"]

#: Games kept loaded per process (several engines on one game share it).
GAME_CACHE_SIZE = 8


class _ActionText(NamedTuple):
    """An action's compiled command template and feedback rule."""

    command: Nodes
    feedback: Nodes
    #: Whether the template reads only static facts: then each operator has one command text, kept.
    cacheable: bool


class GameState(NamedTuple):
    """A state of a game: both state views, the turn that led there, and the admissible commands.

    Example:
        >>> from prm_gym.envs.alfworld.data import list_games
        >>> state = load_game(str(list_games("tiny", task_types="look")[0].resolve())).start()
        >>> state.commands[0][0], state.turn.admissible_commands[0]
        ('go to bed 1', 'go to bed 1')
    """

    #: fast_downward's view: the fluent atoms that hold.
    true_state: frozenset[Atom]
    #: TextWorld's fact set (fluent part), ``not_`` facts included.
    text_state: frozenset[Atom]
    #: The turn that led here.
    turn: GameTurn
    #: Admissible commands and the operator each one applies, in the engine's order.
    commands: tuple[tuple[str, GroundOperator], ...]


class LoadedGame:
    """A game loaded for play: grounded logic, compiled text, per-operator caches, and the initial state.

    Engines on the same game share it (see :func:`load_game`); it holds no engine's current state.

    Example:
        >>> from prm_gym.envs.alfworld.data import list_games
        >>> game = load_game(str(list_games("tiny", task_types="look")[0].resolve()))
        >>> start = game.start()
        >>> go = dict(start.commands)["go to bed 1"]
        >>> true_state, text_state = game.logic.apply(go, start.true_state, start.text_state)
        >>> game.feedback(go, text_state)
        'You arrive at bed 1. On the bed 1, you see a book 1.'
    """

    def __init__(self, path: str) -> None:
        """Load, ground and compile the game at ``path``."""
        data = load_game_json(path)
        domain = parse_domain(data["pddl_domain"])
        #: The game file's absolute path.
        self.path = path
        #: The game's walkthrough (None when it has none).
        self.walkthrough: list[str] | None = list(data["walkthrough"]) if data.get("walkthrough") else None
        #: The grounded game: operators, both state views, the goal.
        self.logic = GroundGame(domain, data["pddl_problem"])
        #: The compiled grammar.
        self.grammar = compile_grammar(data["grammar"])
        fluent = domain.fluent_predicates
        dynamic = frozenset(fluent) | frozenset("not_" + pred for pred in fluent)
        possible = set(self.logic.reachable)
        possible.update(negated(atom) for atom in self.logic.reachable)
        entity_ids = {arg for atom in self.logic.init_facts for arg in atom[1:]}
        #: The text generator: entities and derivations.
        self.text = TextGenerator(
            self.grammar,
            domain,
            self.logic.object_types,
            self.logic.static_facts,
            possible,
            dynamic,
            entity_ids,
        )
        self._parameters = {action.name: action.parameters for action in domain.actions}
        self._dynamic = dynamic
        self._command_cache: dict[tuple[str, ...], str] = {}
        self._templates: dict[str, _ActionText] = {}
        self._initial: GameState | None = None

    def mapping(self, op: GroundOperator) -> dict[Var, Var]:
        """Return the grammar context of ``op``: its placeholders bound to its arguments."""
        return mapping_of(self._parameters[op.key[0]], op.key[1:])

    def _template(self, action: str) -> _ActionText:
        compiled = self._templates.get(action)
        if compiled is None:
            if action not in self.grammar.actions:
                raise ValueError(f"The grammar of {self.path!r} has no action {action!r}.")
            template, feedback = self.grammar.actions[action]
            # A template whose queries only read static facts gives one command per operator: cache it.
            cacheable = not (self.grammar.predicates(template) & self._dynamic)
            compiled = self._templates[action] = _ActionText(template, feedback, cacheable)
        return compiled

    def command(self, op: GroundOperator, text_state: frozenset[Atom]) -> str:
        """Return the command text of ``op`` in ``text_state``, as ``PddlEnv`` derives and formats it."""
        command = self._command_cache.get(op.key)
        if command is None:
            template = self._template(op.key[0])
            command = self.text.derive(template.command, self.mapping(op), text_state)
            if "{" in command or "}" in command:  # PddlEnv formats the command with the entity names
                command = command.format(**{i: entity.name for i, entity in self.text.entities.items()})
            if template.cacheable:
                self._command_cache[op.key] = command
        return command

    def feedback(self, op: GroundOperator, text_state: frozenset[Atom]) -> str:
        """Return the feedback of ``op`` once applied (``text_state`` is the state after it)."""
        return self.text.derive(self._template(op.key[0]).feedback, self.mapping(op), text_state)

    def commands(
        self, true_state: frozenset[Atom], text_state: frozenset[Atom]
    ) -> tuple[tuple[str, GroundOperator], ...]:
        """Return the admissible commands and their operators; a command two operators derive keeps the first."""
        commands: dict[str, GroundOperator] = {}
        for op in self.logic.applicable(true_state):
            commands.setdefault(self.command(op, text_state), op)
        return tuple(commands.items())

    def state_after(
        self,
        feedback: str,
        true_state: frozenset[Atom],
        text_state: frozenset[Atom],
        score: bool,
        won: bool | None = None,
    ) -> GameState:
        """Return the state reached with ``feedback``; ``won`` is computed when not given."""
        commands = self.commands(true_state, text_state)
        if won is None:
            won = self.logic.goal.holds(true_state)
        turn = GameTurn(
            feedback=feedback,
            admissible_commands=tuple(sorted(command for command, _ in commands)),
            score=1.0 if won and score else 0.0,
            won=won,
            lost=False,
        )
        return GameState(true_state, text_state, turn, commands)

    def start(self) -> GameState:
        """Return the initial state (computed once)."""
        if self._initial is None:
            true_state, text_state = self.logic.initial_true, self.logic.initial_text
            intro = self.text.derive(self.grammar.intro, {}, text_state)
            # PddlEnv.reset sets no score, so a game won from the start still scores 0 at reset.
            self._initial = self.state_after(intro, true_state, text_state, score=False)
        return self._initial


def load_game(path: str) -> LoadedGame:
    """Return the game at ``path`` (an absolute path), loaded once per process while it stays in the cache.

    The :data:`GAME_CACHE_SIZE` games used last stay loaded; a file changed on disk is loaded again.

    Raises:
        ValueError: when the file is not an ALFWorld PDDL game the fast engine supports.
    """
    stat = os.stat(path)
    return _load_game(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=GAME_CACHE_SIZE)
def _load_game(path: str, mtime_ns: int, size: int) -> LoadedGame:
    """Load the game at ``path`` (``mtime_ns`` and ``size`` only key the cache)."""
    # Grounding allocates many small tuples that all stay alive: the cyclic GC would only slow it down.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return LoadedGame(path)
    except (ValueError, LookupError, TypeError, AttributeError, RecursionError) as error:
        # Malformed game text fails deep in parsing: one message naming the file instead.
        detail = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
        raise ValueError(f"Cannot play {path!r} with the fast engine: {detail}") from error
    finally:
        if collecting:
            gc.enable()


def clear_game_cache() -> None:
    """Forget the games kept loaded in this process."""
    _load_game.cache_clear()
