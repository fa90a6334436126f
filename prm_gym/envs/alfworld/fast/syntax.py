"""PDDL syntax for the fast engine: s-expressions, typed lists and formulas, read as fast_downward reads them.

:func:`parse_sexp` tokenises PDDL text (comments dropped, lower-cased); :func:`parse_formula` turns a formula
into a tree of named nodes (:data:`Formula`); :func:`dnf` puts a precondition in disjunctive normal form
(:class:`Disjunct` s of :class:`Literal` s), the way fast_downward's normalisation splits disjunctions into
several operators and moves existential variables into the parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "ROOT_TYPE",
    "And",
    "AtomFormula",
    "Disjunct",
    "Exists",
    "Forall",
    "Formula",
    "Imply",
    "Literal",
    "Not",
    "Or",
    "SExp",
    "distinct_variables",
    "dnf",
    "parse_formula",
    "parse_sexp",
    "typed_list",
]

#: A parsed s-expression: a token or a list of s-expressions.
SExp = str | list["SExp"]
#: Typed parameters: ``(?name, type)`` pairs.
Parameters = tuple[tuple[str, str], ...]


class Literal(NamedTuple):
    """A literal of a schema: a predicate over arguments (``?var`` or constants), positive or negated.

    Example:
        >>> Literal("opened", ("?r",), False).positive
        False
    """

    predicate: str
    args: tuple[str, ...]
    positive: bool


class Disjunct(NamedTuple):
    """A disjunct of a precondition in normal form: a conjunction of literals, with its existential parameters."""

    params: Parameters
    literals: tuple[Literal, ...]


# Formulas are frozen slotted dataclasses, not NamedTuples: two constructs with the same fields (``And`` and
# ``Or``) must not compare equal, and attribute reads on slots cost what tuple indexing does (the goal test
# evaluates them at every step).


@dataclass(frozen=True, slots=True)
class AtomFormula:
    """``(pred arg ...)``: an atom, its arguments variables (``?x``) or constants."""

    predicate: str
    args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """``(not f)``."""

    formula: Formula


@dataclass(frozen=True, slots=True)
class And:
    """``(and f ...)``; ``And(())`` is the empty (true) formula."""

    parts: tuple[Formula, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """``(or f ...)``."""

    parts: tuple[Formula, ...]


@dataclass(frozen=True, slots=True)
class Imply:
    """``(imply a b)``."""

    antecedent: Formula
    consequent: Formula


@dataclass(frozen=True, slots=True)
class Exists:
    """``(exists (?x - t ...) f)``."""

    params: Parameters
    body: Formula


@dataclass(frozen=True, slots=True)
class Forall:
    """``(forall (?x - t ...) f)``."""

    params: Parameters
    body: Formula


#: A PDDL formula, as :func:`parse_formula` returns it.
Formula = AtomFormula | Not | And | Or | Imply | Exists | Forall

#: The root of every PDDL type hierarchy.
ROOT_TYPE = "object"


def parse_sexp(text: str) -> list[SExp]:
    """Parse PDDL text as fast_downward does: ``;`` comments dropped, tokens lower-cased.

    Raises:
        ValueError: on unbalanced parentheses or text outside the top-level list.
    """
    tokens: list[str] = []
    for line in text.split("\n"):
        line = line.split(";", 1)[0].replace("(", " ( ").replace(")", " ) ").replace("?", " ?")
        tokens.extend(token.lower() for token in line.split())
    if not tokens or tokens[0] != "(":
        raise ValueError(f"PDDL text must start with '(', found {tokens[:1]!r}.")
    stack: list[list[SExp]] = []
    result: list[SExp] | None = None
    for position, token in enumerate(tokens):
        if result is not None:
            raise ValueError(f"Unexpected PDDL token {token!r} after the top-level list (token {position}).")
        if token == "(":
            stack.append([])
        elif token == ")":
            if not stack:
                raise ValueError("Unbalanced ')' in PDDL text.")
            done = stack.pop()
            if stack:
                stack[-1].append(done)
            else:
                result = done
        else:
            stack[-1].append(token)
    if result is None:
        raise ValueError("Missing ')' in PDDL text.")
    return result


def typed_list(items: Sequence[SExp], default_type: str = ROOT_TYPE) -> list[tuple[str, str]]:
    """Read ``a b - t c`` as ``[(a, t), (b, t), (c, object)]`` (fast_downward's ``parse_typed_list``).

    Example:
        >>> typed_list(["a", "b", "-", "room", "c"])
        [('a', 'room'), ('b', 'room'), ('c', 'object')]
    """
    result: list[tuple[str, str]] = []
    items = list(items)
    while items:
        if "-" in items:
            cut = items.index("-")
            names, type_name, items = items[:cut], items[cut + 1], items[cut + 2 :]
        else:
            names, type_name, items = items, default_type, []
        if not isinstance(type_name, str) or any(not isinstance(name, str) for name in names):
            raise ValueError(f"Unsupported typed list in PDDL: {items!r} (either-types are not supported).")
        result.extend((str(name), str(type_name)) for name in names)
    return result


def parse_formula(sexp: SExp) -> Formula:
    """Return a formula as a tree of :data:`Formula` nodes.

    Example:
        >>> parse_formula(["exists", ["?o", "-", "object"], ["not", ["opened", "?o"]]])
        Exists(params=(('?o', 'object'),), body=Not(formula=AtomFormula(predicate='opened', args=('?o',))))

    Raises:
        ValueError: on a construct that is not a PDDL formula.
    """
    if not isinstance(sexp, list):
        raise ValueError(f"Expected a PDDL formula, found the token {sexp!r}.")
    if not sexp:
        return And(())
    head = sexp[0]
    if head == "and":
        return And(tuple(parse_formula(part) for part in sexp[1:]))
    if head == "or":
        return Or(tuple(parse_formula(part) for part in sexp[1:]))
    if head == "not":
        if len(sexp) != 2:
            raise ValueError(f"'not' takes one formula: {sexp!r}.")
        return Not(parse_formula(sexp[1]))
    if head == "imply":
        return Imply(parse_formula(sexp[1]), parse_formula(sexp[2]))
    if head in ("exists", "forall"):
        quantifier = Exists if head == "exists" else Forall
        return quantifier(tuple(typed_list(sexp[1])), parse_formula(sexp[2]))
    if not isinstance(head, str) or any(not isinstance(arg, str) for arg in sexp[1:]):
        raise ValueError(f"Unsupported PDDL formula: {sexp!r}.")
    return AtomFormula(head, tuple(str(arg) for arg in sexp[1:]))


def dnf(formula: Formula, positive: bool = True) -> list[Disjunct]:
    """Put a precondition in disjunctive normal form: one :class:`Disjunct` per operator it splits into.

    This mirrors fast_downward's normalisation (disjunctions split into several operators, existential
    variables moved into the parameters); universal quantifiers, which it compiles into axioms, are refused.
    """
    match formula:
        case AtomFormula(predicate, args):
            return [Disjunct((), (Literal(predicate, args, positive),))]
        case Not(inner):
            return dnf(inner, not positive)
        case Imply(antecedent, consequent):
            return dnf(Or((Not(antecedent), consequent)), positive)
        case And(parts) | Or(parts):
            conjunctive = isinstance(formula, And) == positive
            disjuncts = [dnf(part, positive) for part in parts]
            if conjunctive:
                result = [Disjunct((), ())]
                for part in disjuncts:
                    result = [Disjunct(p1 + p2, l1 + l2) for p1, l1 in result for p2, l2 in part]
                return result
            return [disjunct for part in disjuncts for disjunct in part]
        case Exists(params, body) if positive:
            return [Disjunct(params + inner.params, inner.literals) for inner in dnf(body, positive)]
    kind = type(formula).__name__
    raise ValueError(f"Unsupported precondition construct {kind} (negated={not positive}) in {formula!r}.")


def distinct_variables(formula: Formula, taken: set[str], renames: dict[str, str] | None = None) -> Formula:
    """Rename quantified variables that reuse a name in scope (as fast_downward's normalisation does)."""
    renames = renames or {}
    match formula:
        case AtomFormula(predicate, args):
            return AtomFormula(predicate, tuple(renames.get(a, a) for a in args))
        case Not(inner):
            return Not(distinct_variables(inner, taken, renames))
        case And(parts):
            return And(tuple(distinct_variables(part, taken, renames) for part in parts))
        case Or(parts):
            return Or(tuple(distinct_variables(part, taken, renames) for part in parts))
        case Imply(antecedent, consequent):
            return Imply(distinct_variables(antecedent, taken, renames), distinct_variables(consequent, taken, renames))
        case Exists(params, body) | Forall(params, body):
            fresh_params = []
            inner_renames = dict(renames)
            for name, type_name in params:
                fresh = name
                counter = 0
                while fresh in taken:
                    counter += 1
                    fresh = f"{name}@{counter}"
                taken.add(fresh)
                inner_renames[name] = fresh
                fresh_params.append((fresh, type_name))
            return type(formula)(tuple(fresh_params), distinct_variables(body, taken, inner_renames))
