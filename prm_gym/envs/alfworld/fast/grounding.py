"""Grounding for the fast engine: an ALFWorld game's operators, found as fast_downward's translator finds them.

TextWorld's ``PddlEnv`` runs fast_downward's translator at every reset and keeps two views of the state:
fast_downward's SAS+ state (which decides what is applicable and whether the goal holds) and a Python set of
facts (which the text grammar reads), updated with *every* effect of the applied SAS+ operator whether its
condition fired or not, a deleted fact ``p`` leaving a ``not_p`` fact behind. :class:`GroundGame` grounds a
game once, the way the translator does (relaxed reachability, static facts compiled away, operators that
change nothing dropped, effects pruned as :mod:`~prm_gym.envs.alfworld.fast.sas` describes), and keeps the
same two views:

- the *true* state: the fluent atoms that hold (fast_downward's view);
- the *text* state: the fluent facts of TextWorld's view, ``not_``-prefixed ones included.

Both are frozensets of atoms, so a state is its own snapshot.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any, NamedTuple

from prm_gym.envs.alfworld.fast.atoms import Atom, AtomIndex
from prm_gym.envs.alfworld.fast.goal import GoalTest
from prm_gym.envs.alfworld.fast.pddl import ActionSchema, Domain, EffectSchema, parse_problem
from prm_gym.envs.alfworld.fast.sas import GroundOperator, SasTranslator, Variant
from prm_gym.envs.alfworld.fast.syntax import ROOT_TYPE, Literal

__all__ = ["GroundGame"]


class _JoinStep(NamedTuple):
    """One join of a relaxed precondition: the atoms of ``predicate`` matching the bound arguments."""

    predicate: str
    #: Argument positions (1-based, as in an atom) already bound, and their arguments (constants or variables).
    positions: tuple[int, ...]
    values: tuple[str, ...]
    #: ``(position, variable)`` the step binds, and those of variables repeated in the literal (checked).
    new_args: tuple[tuple[int, str], ...]
    repeat_args: tuple[tuple[int, str], ...]
    #: The atom index read: "delta" (atoms new this round), "fluent" (reachable) or "static".
    kind: str


class _JoinPlan(NamedTuple):
    """How to find a schema's bindings: its joins in order, then the ``=`` literals to check."""

    steps: tuple[_JoinStep, ...]
    checks: tuple[Literal, ...]


class _Schema(NamedTuple):
    """One precondition variant of an action, prepared for grounding (with its join plans, per source)."""

    action: ActionSchema
    variant: int
    params: tuple[tuple[str, str], ...]
    literals: tuple[Literal, ...]
    #: Positive fluent literals: in later rounds each reads the delta in turn.
    fluent_pos: list[Literal]
    adds: list[EffectSchema]
    #: ``{source: plan}`` (``source``: the fluent literal reading the delta, None in the first round).
    plans: dict[int | None, _JoinPlan]


class GroundGame:
    """One ALFWorld game grounded against its domain: operators, initial states, goal test.

    Grounding follows fast_downward's translator: relaxed reachability from the initial state (negative
    literals ignored) gives the fluent atoms and the ground operators; each operator is then translated as
    ``translate.py`` does, and those that change nothing are dropped.

    Args:
        domain: the parsed domain.
        problem_text: the game's ``pddl_problem``.

    Raises:
        ValueError: on PDDL this engine does not support.

    Example:
        >>> from prm_gym.envs.alfworld.data import list_games
        >>> from prm_gym.envs.alfworld.fast.pddl import load_game_json, parse_domain
        >>> data = load_game_json(list_games("tiny", task_types="look")[0])
        >>> game = GroundGame(parse_domain(data["pddl_domain"]), data["pddl_problem"])
        >>> go = game.applicable(game.initial_true)[0]
        >>> go.key[0], go.key[4]
        ('gotolocation', 'bed_bar__plus_01_dot_24_bar__plus_00_dot_00_bar__minus_00_dot_90')
        >>> true_state, text_state = game.apply(go, game.initial_true, game.initial_text)
        >>> game.goal.holds(true_state), ("not_atlocation", *go.key[1:3]) in text_state
        (False, True)
    """

    def __init__(self, domain: Domain, problem_text: str) -> None:
        """Ground the problem ``problem_text`` of ``domain``."""
        self.domain = domain
        problem = parse_problem(problem_text, domain)
        #: Declared type of every object (fast_downward's ``name2type``).
        self.object_types: dict[str, str] = {}
        for name, type_name in problem.objects:
            self.object_types.setdefault(name, type_name)
        by_type: dict[str, list[str]] = defaultdict(list)
        for name, type_name in self.object_types.items():
            for t in dict.fromkeys((type_name, *domain.supertypes.get(type_name, ()), ROOT_TYPE)):
                by_type[t].append(name)
        self._objects_by_type: dict[str, list[str]] = dict(by_type)
        self._members: dict[str, frozenset[str]] = {t: frozenset(names) for t, names in by_type.items()}
        fluent = domain.fluent_predicates
        #: Every initial fact, TextWorld's initial fact set (static and fluent).
        self.init_facts: tuple[Atom, ...] = problem.init
        #: Facts no action changes.
        self.static_facts: frozenset[Atom] = frozenset(a for a in self.init_facts if a[0] not in fluent)
        init_fluent = frozenset(a for a in self.init_facts if a[0] in fluent)
        self._static = AtomIndex(self.static_facts)
        variants = self._ground(init_fluent)
        translator = SasTranslator(
            fluent, self.reachable, self._holds_static, {action.name: action for action in domain.actions}
        )
        self._index([op for op in map(translator.translate, variants) if op is not None])
        #: The initial true state and text state.
        self.initial_true: frozenset[Atom] = init_fluent
        self.initial_text: frozenset[Atom] = init_fluent
        possible = AtomIndex(itertools.chain(self.static_facts, self.reachable))
        #: The goal test (on the true state).
        self.goal = GoalTest(problem.goal, fluent, self.static_facts, possible, self._objects_by_type)

    # -- grounding ---------------------------------------------------------------------------------------

    def _holds_static(self, pred: str, args: tuple[str, ...]) -> bool:
        if pred == "=":
            return args[0] == args[1]
        return (pred, *args) in self.static_facts

    def _ground(self, init_fluent: frozenset[Atom]) -> list[Variant]:
        """Find the relaxed-reachable atoms (:attr:`reachable`) and return the ground variants, sorted by name."""
        domain = self.domain
        fluent = domain.fluent_predicates
        reachable = AtomIndex(init_fluent)
        delta: list[Atom] = list(init_fluent)
        found: dict[tuple[Any, ...], tuple[ActionSchema, dict[str, str], tuple[Literal, ...]]] = {}
        schemas: list[_Schema] = []
        for action in domain.actions:
            for index, disjunct in enumerate(action.variants):
                params = action.parameters + disjunct.params
                literals = disjunct.literals
                fluent_pos = [lit for lit in literals if lit.positive and lit.predicate in fluent]
                adds = [e for e in action.effects if e.literal.positive]
                schemas.append(_Schema(action, index, params, literals, fluent_pos, adds, {}))
        first_round = True
        while first_round or delta:
            delta_index = AtomIndex(delta)
            new_atoms: list[Atom] = []
            for action, index, params, literals, fluent_pos, adds, plans in schemas:
                sources: list[int | None]
                if first_round:
                    sources = [None]
                elif fluent_pos:
                    sources = list(range(len(fluent_pos)))
                else:
                    continue
                for source in sources:
                    plan = plans.get(source)
                    if plan is None:
                        plan = plans[source] = self._plan(literals, source, fluent_pos)
                    for binding in self._bindings(params, plan, reachable, delta_index):
                        key = (action.name, index, *(binding[p] for p, _ in params))
                        if key in found:
                            continue
                        found[key] = (action, binding, literals)
                        for effect in adds:
                            if effect.condition and not self._relaxed_condition(effect.condition, binding, reachable):
                                continue
                            pred, args, _ = effect.literal
                            atom = (pred, *(binding.get(a, a) for a in args))
                            if atom not in reachable.atoms:
                                new_atoms.append(atom)
            first_round = False
            delta = [atom for atom in dict.fromkeys(new_atoms) if reachable.add(atom)]
        #: Fluent atoms fast_downward finds relaxed-reachable (its SAS+ variables).
        self.reachable: frozenset[Atom] = frozenset(reachable.atoms)
        variants: list[Variant] = []
        for action, binding, literals in found.values():
            variant = self._variant(action, binding, literals)
            if variant is not None:
                variants.append(variant)
        variants.sort(key=lambda v: v.key)
        return variants

    def _index(self, ops: list[GroundOperator]) -> None:
        """Keep the operators, indexed by one positive fluent precondition (the least shared one).

        :meth:`applicable` then finds the applicable ones by scanning the state's atoms.
        """
        self._ops = tuple(ops)
        degree: dict[Atom, int] = defaultdict(int)
        for op in ops:
            for atom in op.pre_true:
                degree[atom] += 1
        watch: dict[Atom, list[GroundOperator]] = defaultdict(list)
        unwatched: list[GroundOperator] = []
        for op in ops:
            if op.pre_true:
                watch[min(op.pre_true, key=lambda a: (degree[a], a))].append(op)
            else:
                unwatched.append(op)
        self._watch: dict[Atom, tuple[GroundOperator, ...]] = {atom: tuple(group) for atom, group in watch.items()}
        self._unwatched: tuple[GroundOperator, ...] = tuple(unwatched)

    def _relaxed_condition(
        self, condition: tuple[Literal, ...], binding: dict[str, str], reachable: AtomIndex
    ) -> bool:
        # fast_downward's relaxed exploration drops negative literals (static ones included).
        fluent = self.domain.fluent_predicates
        for pred, args, positive in condition:
            if not positive:
                continue
            ground = tuple(binding.get(a, a) for a in args)
            if pred in fluent:
                if (pred, *ground) not in reachable.atoms:
                    return False
            elif not self._holds_static(pred, ground):
                return False
        return True

    def _plan(
        self, literals: tuple[Literal, ...], source: int | None, fluent_pos: list[Literal]
    ) -> _JoinPlan:
        """Order the joins over the positive literals; ``source`` (a fluent literal's index) reads the delta."""
        fluent = self.domain.fluent_predicates
        joins = [lit for lit in literals if lit.positive and lit.predicate != "="]
        checks = [lit for lit in literals if lit.positive and lit.predicate == "="]
        first = fluent_pos[source] if source is not None else None
        bound: set[str] = set()
        steps: list[_JoinStep] = []
        remaining = list(joins)

        def score(lit: Literal) -> tuple[int, int, int]:
            unbound = len({a for a in lit.args if a.startswith("?") and a not in bound})
            size = self._static.size(lit.predicate) if lit.predicate not in fluent else 1 << 30
            return (unbound, int(lit.predicate in fluent), size)

        while remaining:
            best = first if first is not None and first in remaining else min(remaining, key=score)
            remaining.remove(best)
            pred, args, _ = best
            positions = tuple(i + 1 for i, a in enumerate(args) if not a.startswith("?") or a in bound)
            new_args: list[tuple[int, str]] = []
            repeat_args: list[tuple[int, str]] = []
            here: set[str] = set()
            for i, a in enumerate(args):
                if a.startswith("?") and a not in bound:
                    (repeat_args if a in here else new_args).append((i + 1, a))
                    here.add(a)
            kind = "delta" if best is first else ("fluent" if pred in fluent else "static")
            values = tuple(args[i - 1] for i in positions)
            steps.append(_JoinStep(pred, positions, values, tuple(new_args), tuple(repeat_args), kind))
            bound |= here
        return _JoinPlan(tuple(steps), tuple(checks))

    def _bindings(
        self,
        params: tuple[tuple[str, str], ...],
        plan: _JoinPlan,
        reachable: AtomIndex,
        delta_index: AtomIndex,
    ) -> list[dict[str, str]]:
        """Bindings of ``params`` under which the relaxed precondition holds (static and reachable atoms)."""
        steps, checks = plan
        types = dict(params)
        indexes = {"delta": delta_index, "fluent": reachable, "static": self._static}
        members = self._members
        nothing: frozenset[str] = frozenset()  # an unknown type (e.g. ALFWorld's "location,") has no objects
        partial: list[dict[str, str]] = [{}]
        for pred, positions, value_args, new_args, repeat_args, kind in steps:
            lookup = indexes[kind].lookup
            typed = [(i, a, members.get(types.get(a, ROOT_TYPE), nothing)) for i, a in new_args]
            extended: list[dict[str, str]] = []
            for binding in partial:
                values = tuple(binding[a] if a[0] == "?" else a for a in value_args)
                for atom in lookup(pred, positions, values):
                    for i, _, allowed in typed:
                        if atom[i] not in allowed:
                            break
                    else:
                        new = binding.copy()
                        for i, a, _ in typed:
                            new[a] = atom[i]
                        if not repeat_args or all(new[a] == atom[i] for i, a in repeat_args):
                            extended.append(new)
            partial = extended
            if not partial:
                return []
        free = [name for name, _ in params if name not in partial[0]]
        if not free and not checks:
            return partial
        pools = [self._objects_by_type.get(types[name], []) for name in free]
        result: list[dict[str, str]] = []
        for binding in partial:
            for values in itertools.product(*pools):
                full = dict(binding)
                full.update(zip(free, values, strict=True))
                # Relaxed precondition: negative literals are dropped (checked when the operator is built).
                if all(self._holds_static(p, tuple(full.get(a, a) for a in args)) for p, args, _ in checks):
                    result.append(full)
        return result

    def _variant(
        self, action: ActionSchema, binding: dict[str, str], literals: tuple[Literal, ...]
    ) -> Variant | None:
        """Build a ground variant with its fluent precondition (None when fast_downward drops it)."""
        fluent = self.domain.fluent_predicates
        reachable = self.reachable
        pre: dict[Atom, bool] = {}
        for pred, args, positive in literals:
            if pred not in fluent:
                if not positive and self._holds_static(pred, tuple(binding.get(a, a) for a in args)):
                    return None  # a negative static literal that is false: fast_downward's Impossible
                continue
            atom = (pred, *(binding.get(a, a) for a in args))
            if not positive and atom not in reachable:
                continue  # always true
            if pre.setdefault(atom, positive) != positive:
                return None  # contradictory precondition
        key = (action.name, *(binding[name] for name, _ in action.parameters))
        pre_true = tuple(a for a, v in pre.items() if v)
        return Variant(key, tuple(binding.items()), pre_true, tuple(a for a, v in pre.items() if not v))

    def operators(self) -> dict[tuple[str, ...], list[GroundOperator]]:
        """Return every SAS+ operator fast_downward emits for the game, by name."""
        result: dict[tuple[str, ...], list[GroundOperator]] = {}
        for op in self._ops:
            result.setdefault(op.key, []).append(op)
        return result

    def applicable(self, state: frozenset[Atom]) -> list[GroundOperator]:
        """List the applicable operators, one per name, sorted by name.

        Operators of one name (a disjunctive precondition split in several) differ only in their preconditions
        in ALFWorld's games (``grounding_check`` checks it), so which applicable one stands for the name does
        not matter; the first met is kept.
        """
        result: dict[tuple[str, ...], GroundOperator] = {}
        for atom in state:
            ops = self._watch.get(atom)
            if ops is None:
                continue
            for op in ops:
                if op.key in result:
                    continue
                for needed in op.pre_true:
                    if needed not in state:
                        break
                else:
                    for forbidden in op.pre_false:
                        if forbidden in state:
                            break
                    else:
                        result[op.key] = op
        for op in self._unwatched:
            if op.key not in result and not any(f in state for f in op.pre_false):
                result[op.key] = op
        return [result[key] for key in sorted(result)]

    def apply(
        self, op: GroundOperator, true_state: frozenset[Atom], text_state: frozenset[Atom]
    ) -> tuple[frozenset[Atom], frozenset[Atom]]:
        """Apply ``op`` to both views: fast_downward's (conditional effects honoured) and TextWorld's."""
        if op.true_add is not None and op.true_del is not None:
            new_true = true_state.difference(op.true_del).union(op.true_add)
        else:
            # fast_downward: every condition is read in the old state, later effects overwrite earlier ones.
            values = {
                atom: value for atom, value, cond in op.effects if all((a in true_state) == v for a, v in cond)
            }
            new_true = (true_state - {a for a, v in values.items() if not v}) | {a for a, v in values.items() if v}
        return new_true, text_state.difference(op.text_del).union(op.text_add)
