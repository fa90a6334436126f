"""The goal test of the fast engine: a PDDL goal evaluated on a state, as fast_downward's goal axioms do.

fast_downward compiles a goal with quantifiers into axioms and reads the result from its ``new-axiom@``
facts; :class:`GoalTest` evaluates the formula on the state directly, existential quantifiers as joins over
the atoms that can hold (static facts and relaxed-reachable fluents), which is the same truth value.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import NamedTuple

from prm_gym.envs.alfworld.fast.atoms import Atom, AtomIndex
from prm_gym.envs.alfworld.fast.syntax import ROOT_TYPE, And, AtomFormula, Exists, Forall, Formula, Imply, Not, Or

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
    #: The other parts of the conjunction, evaluated once every variable is bound.
    checks: tuple[Formula, ...]


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
        goal: Formula,
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
        # Keyed by the quantifier node's id: the goal tree is alive as long as this test, so ids stay unique.
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

    def _eval(self, formula: Formula, binding: dict[str, str], state: frozenset[Atom]) -> bool:
        # An isinstance chain, most frequent first: this runs at every step that may change the goal.
        if isinstance(formula, AtomFormula):
            return self._fact(formula.predicate, tuple(binding.get(a, a) for a in formula.args), state)
        if isinstance(formula, And):
            return all(self._eval(part, binding, state) for part in formula.parts)
        if isinstance(formula, Exists):
            return self._exists(formula, binding, state)
        if isinstance(formula, Not):
            return not self._eval(formula.formula, binding, state)
        if isinstance(formula, Or):
            return any(self._eval(part, binding, state) for part in formula.parts)
        if isinstance(formula, Imply):
            return not self._eval(formula.antecedent, binding, state) or self._eval(formula.consequent, binding, state)
        # A universal quantifier: no counterexample exists (the plan is cached on the Forall node itself).
        return not self._exists(formula, binding, state)

    def _exists(self, formula: Exists | Forall, binding: dict[str, str], state: frozenset[Atom]) -> bool:
        """Whether the quantifier's body (negated for ``Forall``: a counterexample) holds under some binding."""
        key = (id(formula), tuple(sorted(binding)))
        plan = self._plans.get(key)
        if plan is None:
            body = formula.body if isinstance(formula, Exists) else Not(formula.body)
            plan = self._plans[key] = self._exists_plan(formula.params, body, set(binding))
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

    def _exists_plan(self, quantified: tuple[tuple[str, str], ...], body: Formula, bound: set[str]) -> _ExistsPlan:
        """Compile ``(exists quantified body)``: join steps over its positive atoms, free variables, checks."""
        params = list(quantified)
        parts: list[Formula] = []
        stack = [body]
        while stack:
            part = stack.pop(0)
            if isinstance(part, And):
                stack[0:0] = list(part.parts)
            elif isinstance(part, Exists) and not {name for name, _ in part.params} & (bound | {n for n, _ in params}):
                params += list(part.params)
                stack.insert(0, part.body)
            else:
                parts.append(part)
        types = dict(params)
        joins = [part for part in parts if isinstance(part, AtomFormula) and part.predicate != "="]
        checks = [part for part in parts if not (isinstance(part, AtomFormula) and part.predicate != "=")]
        known = set(bound)
        steps: list[_ExistsStep] = []
        fluent = self._fluent

        def score(part: AtomFormula) -> tuple[int, int, int]:
            unbound = len({a for a in part.args if a.startswith("?") and a not in known})
            return (unbound, int(part.predicate in fluent), len(self._possible.lookup(part.predicate, (), ())))

        while joins:
            part = min(joins, key=score)
            joins.remove(part)
            pred, args = part.predicate, part.args
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


def _formula_predicates(formula: Formula) -> Iterable[str]:
    match formula:
        case AtomFormula(predicate, _):
            yield predicate
        case Not(inner):
            yield from _formula_predicates(inner)
        case And(parts) | Or(parts):
            for part in parts:
                yield from _formula_predicates(part)
        case Imply(antecedent, consequent):
            yield from _formula_predicates(antecedent)
            yield from _formula_predicates(consequent)
        case Exists(_, body) | Forall(_, body):
            yield from _formula_predicates(body)

