"""The goal test of the fast engine: a PDDL goal evaluated on a state, as fast_downward's goal axioms do.

fast_downward compiles a goal with quantifiers into axioms and reads the result from its ``new-axiom@``
facts; :class:`GoalTest` evaluates the formula on the state directly, existential quantifiers as joins over
the atoms that can hold (static facts and relaxed-reachable fluents), which is the same truth value.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any, NamedTuple

from prm_gym.envs.alfworld.fast.atoms import Atom, AtomIndex
from prm_gym.envs.alfworld.fast.syntax import ROOT_TYPE

__all__ = ["GoalTest"]


class _ExistsStep(NamedTuple):
    """One join of an existential conjunction: the possible atoms of ``predicate`` matching the bound arguments."""

    predicate: str
    args: tuple[str, ...]
    #: Argument positions (1-based, as in an atom) already bound, and their arguments (constants or variables).
    positions: tuple[int, ...]
    values: tuple[str, ...]
    #: ``(position, variable, type)`` the step binds, and ``(position, variable)`` of repeats (checked).
    new_vars: tuple[tuple[int, str, str], ...]
    repeats: tuple[tuple[int, str], ...]


class _ExistsPlan(NamedTuple):
    """An existential conjunction compiled: joins, then the variables no join binds, then the other parts."""

    steps: tuple[_ExistsStep, ...]
    #: ``(variable, type)`` bound by enumerating the type's objects.
    free: tuple[tuple[str, str], ...]
    checks: tuple[tuple[Any, ...], ...]


class GoalTest:
    """Whether a game's goal holds in a state (a frozenset of the fluent atoms that hold).

    Args:
        goal: the goal formula (:func:`~prm_gym.envs.alfworld.fast.pddl.parse_formula`).
        fluent_predicates: predicates some action changes; the others are read from ``static_facts``.
        static_facts: facts no action changes.
        possible: every atom that can hold (static facts and relaxed-reachable fluents), for joins.
        objects_by_type: objects of each type, subtypes included.

    Example:
        >>> from prm_gym.envs.alfworld.data import list_games
        >>> from prm_gym.envs.alfworld.fast.grounding import GroundGame
        >>> from prm_gym.envs.alfworld.fast.pddl import load_game_json, parse_domain
        >>> data = load_game_json(list_games("tiny", task_types="look")[0])
        >>> game = GroundGame(parse_domain(data["pddl_domain"]), data["pddl_problem"])
        >>> game.goal.holds(game.initial_true), sorted(game.goal.predicates)
        (False, ['atlocation', 'holds', 'inreceptacle', 'istoggled'])
    """

    def __init__(
        self,
        goal: tuple[Any, ...],
        fluent_predicates: frozenset[str],
        static_facts: frozenset[Atom],
        possible: AtomIndex,
        objects_by_type: dict[str, list[str]],
    ) -> None:
        self._goal = goal
        self._fluent = fluent_predicates
        self._static = static_facts
        self._possible = possible
        self._objects_by_type = objects_by_type
        self._members = {type_name: frozenset(names) for type_name, names in objects_by_type.items()}
        self._plans: dict[tuple[int, tuple[str, ...]], _ExistsPlan] = {}
        #: Fluent predicates the goal reads: an operator changing none of them leaves the goal as it was.
        self.predicates: frozenset[str] = frozenset(_formula_predicates(goal)) & fluent_predicates

    def holds(self, state: frozenset[Atom]) -> bool:
        """Return whether the goal holds in ``state``."""
        return self._eval(self._goal, {}, state)

    def _fact(self, pred: str, args: tuple[str, ...], state: frozenset[Atom]) -> bool:
        if pred == "=":
            return args[0] == args[1]
        if pred in self._fluent:
            return (pred, *args) in state
        return (pred, *args) in self._static

    def _eval(self, formula: tuple[Any, ...], binding: dict[str, str], state: frozenset[Atom]) -> bool:
        kind = formula[0]
        if kind == "atom":
            return self._fact(formula[1], tuple(binding.get(a, a) for a in formula[2]), state)
        if kind == "not":
            return not self._eval(formula[1], binding, state)
        if kind == "and":
            return all(self._eval(part, binding, state) for part in formula[1])
        if kind == "or":
            return any(self._eval(part, binding, state) for part in formula[1])
        if kind == "imply":
            return not self._eval(formula[1], binding, state) or self._eval(formula[2], binding, state)
        if kind == "exists":
            return self._exists(formula, binding, state)
        if kind == "forall":
            return not self._exists(("exists", formula[1], ("not", formula[2])), binding, state)
        raise ValueError(f"Unsupported goal construct {kind!r}.")  # pragma: no cover - parse refuses it

    def _exists(self, formula: tuple[Any, ...], binding: dict[str, str], state: frozenset[Atom]) -> bool:
        key = (id(formula), tuple(sorted(binding)))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._exists_plan(formula, set(binding))
        steps, free, checks = plan
        fluent = self._fluent
        static = self._static
        lookup = self._possible.lookup
        members = self._members
        objects_by_type = self._objects_by_type
        last = len(steps)

        def run(index: int, local: dict[str, str]) -> bool:
            if index == last:
                pools = [objects_by_type.get(type_name, []) for _, type_name in free]
                for values in itertools.product(*pools):
                    full = dict(local)
                    full.update(zip((name for name, _ in free), values, strict=False))
                    if all(self._eval(part, full, state) for part in checks):
                        return True
                return False
            pred, args, positions, value_args, new_vars, repeats = steps[index]
            is_fluent = pred in fluent
            if not new_vars:
                atom = (pred, *(local.get(a, a) for a in args))
                return (atom in state if is_fluent else atom in static) and run(index + 1, local)
            values = tuple(local[a] if a[0] == "?" else a for a in value_args)
            for atom in lookup(pred, positions, values):
                if is_fluent and atom not in state:
                    continue
                for i, _, type_name in new_vars:
                    if atom[i] not in members.get(type_name, ()):
                        break
                else:
                    extended = dict(local)
                    for i, name, _ in new_vars:
                        extended[name] = atom[i]
                    if all(extended[name] == atom[i] for i, name in repeats) and run(index + 1, extended):
                        return True
            return False

        return run(0, dict(binding))

    def _exists_plan(self, formula: tuple[Any, ...], bound: set[str]) -> _ExistsPlan:
        """Compile an existential conjunction: join steps over its positive atoms, free variables, checks."""
        params = list(formula[1])
        parts: list[tuple[Any, ...]] = []
        stack = [formula[2]]
        while stack:
            part = stack.pop(0)
            if part[0] == "and":
                stack[0:0] = list(part[1])
            elif part[0] == "exists" and not {name for name, _ in part[1]} & (bound | {n for n, _ in params}):
                params += list(part[1])
                stack.insert(0, part[2])
            else:
                parts.append(part)
        types = dict(params)
        joins = [part for part in parts if part[0] == "atom" and part[1] != "="]
        checks = [part for part in parts if not (part[0] == "atom" and part[1] != "=")]
        known = set(bound)
        steps: list[_ExistsStep] = []
        fluent = self._fluent

        def score(part: tuple[Any, ...]) -> tuple[int, int, int]:
            unbound = len({a for a in part[2] if a.startswith("?") and a not in known})
            return (unbound, int(part[1] in fluent), len(self._possible.lookup(part[1], (), ())))

        while joins:
            part = min(joins, key=score)
            joins.remove(part)
            _, pred, args = part
            positions = tuple(i + 1 for i, a in enumerate(args) if not a.startswith("?") or a in known)
            new_vars: list[tuple[int, str, str]] = []
            repeats: list[tuple[int, str]] = []
            here: set[str] = set()
            for i, a in enumerate(args):
                if a.startswith("?") and a not in known:
                    if a in here:
                        repeats.append((i + 1, a))
                    else:
                        new_vars.append((i + 1, a, types.get(a, ROOT_TYPE)))
                        here.add(a)
            value_args = tuple(args[i - 1] for i in positions)
            steps.append(_ExistsStep(pred, args, positions, value_args, tuple(new_vars), tuple(repeats)))
            known |= here
        free = [(name, type_name) for name, type_name in params if name not in known]
        return _ExistsPlan(tuple(steps), tuple(free), tuple(checks))


def _formula_predicates(formula: tuple[Any, ...]) -> Iterable[str]:
    kind = formula[0]
    if kind == "atom":
        yield formula[1]
    elif kind == "not":
        yield from _formula_predicates(formula[1])
    elif kind in ("and", "or"):
        for part in formula[1]:
            yield from _formula_predicates(part)
    elif kind == "imply":
        yield from _formula_predicates(formula[1])
        yield from _formula_predicates(formula[2])
    elif kind in ("exists", "forall"):
        yield from _formula_predicates(formula[2])

