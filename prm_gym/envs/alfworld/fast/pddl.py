"""PDDL for the fast engine: ALFWorld's domain and problem text, parsed as fast_downward's translator reads it.

:func:`parse_domain` turns a domain into a :class:`Domain` (types, constants, action schemas with their
preconditions in disjunctive normal form); :func:`parse_problem` turns a problem into a :class:`Problem`
(objects, initial facts, goal formula). Only what ALFWorld's games use is supported (STRIPS with negation,
disjunction, existential preconditions, conditional effects, action costs); anything else is refused with a
``ValueError`` that names it. The syntax itself (s-expressions, formulas) is :mod:`.syntax`'s.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from prm_gym.envs.alfworld.fast.atoms import Atom
from prm_gym.envs.alfworld.fast.syntax import (
    ROOT_TYPE,
    And,
    AtomFormula,
    Disjunct,
    Formula,
    Literal,
    Not,
    SExp,
    distinct_variables,
    dnf,
    parse_formula,
    parse_sexp,
    typed_list,
)

__all__ = [
    "ActionSchema",
    "Domain",
    "EffectSchema",
    "Problem",
    "load_game_json",
    "parse_domain",
    "parse_problem",
]


@dataclass(frozen=True)
class EffectSchema:
    """One (possibly conditional) effect of an action schema.

    Example:
        >>> from prm_gym.envs.alfworld.data import list_games
        >>> data = load_game_json(list_games("tiny", task_types="look")[0])
        >>> domain = parse_domain(data["pddl_domain"])
        >>> take = next(action for action in domain.actions if action.name == "pickupobject")
        >>> take.effects[1]
        EffectSchema(condition=(), literal=Literal(predicate='holds', args=('?a', '?o'), positive=True))
    """

    #: Literals of the effect's condition (empty when unconditional).
    condition: tuple[Literal, ...]
    #: The effect literal.
    literal: Literal


@dataclass(frozen=True)
class ActionSchema:
    """A PDDL action, its precondition split into conjunctive variants (fast_downward's normalisation).

    Example:
        >>> from prm_gym.envs.alfworld.data import list_games
        >>> data = load_game_json(list_games("tiny", task_types="look")[0])
        >>> domain = parse_domain(data["pddl_domain"])
        >>> take = next(action for action in domain.actions if action.name == "pickupobject")
        >>> [name for name, _ in take.parameters], len(take.variants)  # "(or (not (openable ?r)) (opened ?r))"
        (['?a', '?l', '?o', '?r'], 2)
    """

    name: str
    #: The action's own parameters, ``(?name, type)``.
    parameters: tuple[tuple[str, str], ...]
    #: The precondition's disjuncts (existential parameters and literals), one operator each.
    variants: tuple[Disjunct, ...]
    effects: tuple[EffectSchema, ...]


def _effects(sexp: SExp, condition: tuple[Literal, ...] = ()) -> list[EffectSchema]:
    if not isinstance(sexp, list):
        raise ValueError(f"Expected a PDDL effect, found the token {sexp!r}.")
    if not sexp:
        return []
    head = sexp[0]
    if head == "and":
        return [effect for part in sexp[1:] for effect in _effects(part, condition)]
    if head in ("increase", "decrease", "assign", "scale-up", "scale-down"):
        return []  # action costs
    if head == "when":
        disjuncts = dnf(parse_formula(sexp[1]))
        if len(disjuncts) != 1 or disjuncts[0].params:
            raise ValueError(f"Unsupported effect condition (not a conjunction of literals): {sexp[1]!r}.")
        return _effects(sexp[2], condition + disjuncts[0].literals)
    if head == "forall":
        raise ValueError(f"Universally quantified effects are not supported: {sexp!r}.")
    match parse_formula(sexp):
        case AtomFormula(predicate, args):
            return [EffectSchema(condition, Literal(predicate, args, True))]
        case Not(AtomFormula(predicate, args)):
            return [EffectSchema(condition, Literal(predicate, args, False))]
    raise ValueError(f"Unsupported PDDL effect: {sexp!r}.")


@dataclass(frozen=True)
class Domain:
    """A parsed PDDL domain.

    Example:
        >>> from prm_gym.envs.alfworld.data import list_games
        >>> data = load_game_json(list_games("tiny", task_types="look")[0])
        >>> domain = parse_domain(data["pddl_domain"])
        >>> [action.name for action in domain.actions][:5]
        ['look', 'inventory', 'examinereceptacle', 'examineobject', 'gotolocation']
        >>> domain.supertypes["receptacle"], "holds" in domain.fluent_predicates
        (('object',), True)
    """

    #: Every type's ancestors, fast_downward's ``supertype_names`` (``object`` is the root).
    supertypes: dict[str, tuple[str, ...]]
    #: Types in fast_downward's order (the root ``object`` first).
    type_order: tuple[str, ...]
    constants: tuple[tuple[str, str], ...]
    actions: tuple[ActionSchema, ...]
    #: Predicates some effect changes; the others are static.
    fluent_predicates: frozenset[str]


@functools.lru_cache(maxsize=8)
def parse_domain(text: str) -> Domain:
    """Parse a PDDL domain (once per process and domain text: the 8 domains used last stay parsed)."""
    sexp = parse_sexp(text)
    if not sexp or sexp[0] != "define":
        raise ValueError("A PDDL domain must start with '(define'.")
    declared: list[tuple[str, str]] = []
    constants: list[tuple[str, str]] = []
    actions: list[ActionSchema] = []
    for entry in sexp[2:]:
        if not isinstance(entry, list) or not entry:
            raise ValueError(f"Unexpected PDDL domain entry {entry!r}.")
        field = entry[0]
        if field == ":types":
            declared = typed_list(entry[1:])
        elif field == ":constants":
            constants = typed_list(entry[1:])
        elif field == ":action":
            actions.append(_parse_action(entry))
        elif field == ":derived":
            raise ValueError("Derived predicates (:derived) are not supported.")
    # fast_downward: the root type, then the declared ones; ancestors by transitive closure.
    parents: dict[str, str] = {}
    type_order = [ROOT_TYPE]
    for name, parent in declared:
        if name != ROOT_TYPE:
            parents[name] = parent
        if name not in type_order:
            type_order.append(name)
    supertypes: dict[str, tuple[str, ...]] = {}
    for name in type_order:
        chain: list[str] = []
        current = name
        while current in parents and parents[current] not in chain and parents[current] != name:
            current = parents[current]
            chain.append(current)
        supertypes[name] = tuple(chain)
    fluent = frozenset(effect.literal.predicate for action in actions for effect in action.effects)
    return Domain(supertypes, tuple(type_order), tuple(constants), tuple(actions), fluent)


def _parse_action(entry: list[SExp]) -> ActionSchema:
    name = entry[1]
    if not isinstance(name, str):
        raise ValueError(f"Bad PDDL action name {name!r}.")
    fields: dict[str, SExp] = {}
    for key, value in zip(entry[2::2], entry[3::2], strict=False):
        fields[str(key)] = value
    parameters = tuple(typed_list(fields.get(":parameters", [])))
    precondition = distinct_variables(parse_formula(fields.get(":precondition", [])), {p for p, _ in parameters})
    variants = tuple(dnf(precondition))
    effects = tuple(_effects(fields.get(":effect", [])))
    return ActionSchema(name, parameters, variants, effects)


@dataclass(frozen=True)
class Problem:
    """A parsed PDDL problem.

    Example:
        >>> from prm_gym.envs.alfworld.data import list_games
        >>> data = load_game_json(list_games("tiny", task_types="look")[0])
        >>> domain = parse_domain(data["pddl_domain"])
        >>> problem = parse_problem(data["pddl_problem"], domain)
        >>> problem.objects[0], type(problem.goal).__name__
        (('agent1', 'agent'), 'And')
    """

    #: ``(name, declared type)`` of every object, the domain's constants first.
    objects: tuple[tuple[str, str], ...]
    #: Initial facts, without duplicates, in file order (``=`` facts and numeric fluents left out).
    init: tuple[Atom, ...]
    #: The goal formula.
    goal: Formula


def parse_problem(text: str, domain: Domain) -> Problem:
    """Parse a PDDL problem of ``domain``.

    Raises:
        ValueError: on an initial fact that is not a flat atom.
    """
    objects: list[tuple[str, str]] = list(domain.constants)
    init: list[Atom] = []
    goal: Formula = And(())
    for entry in parse_sexp(text)[1:]:
        if not isinstance(entry, list) or not entry:
            continue
        if entry[0] == ":objects":
            objects += typed_list(entry[1:])
        elif entry[0] == ":init":
            for fact in entry[1:]:
                if not isinstance(fact, list) or not fact or fact[0] in ("=", "not"):
                    continue  # numeric fluents (action costs) and explicit negations
                if any(not isinstance(arg, str) for arg in fact):
                    raise ValueError(f"Unsupported initial fact {fact!r}.")
                init.append(tuple(str(arg) for arg in fact))
        elif entry[0] == ":goal":
            goal = parse_formula(entry[1])
    return Problem(tuple(objects), tuple(dict.fromkeys(init)), goal)


def load_game_json(path: str) -> dict[str, Any]:
    """Read an ALFWorld ``game.tw-pddl`` file.

    Raises:
        ValueError: when the file lacks one of the fields the engine needs.
    """
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"Game file {path!r} is not an ALFWorld .tw-pddl (JSON) game: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"Game file {path!r} is not an ALFWorld .tw-pddl game (a JSON object).")
    missing = [key for key in ("pddl_domain", "pddl_problem", "grammar") if key not in data]
    if missing:
        raise ValueError(f"Game file {path!r} lacks {', '.join(missing)}.")
    return data
