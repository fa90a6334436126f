"""PDDL syntax for the fast engine: s-expressions, typed lists and formulas, read as fast_downward reads them.

:func:`parse_sexp` tokenises PDDL text (comments dropped, lower-cased); :func:`parse_formula` turns a formula
into nested tuples; :func:`dnf` puts a precondition in disjunctive normal form, the way fast_downward's
normalisation splits disjunctions into several operators and moves existential variables into the parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "ROOT_TYPE",
    "Disjunct",
    "Literal",
    "SExp",
    "distinct_variables",
    "dnf",
    "parse_formula",
    "parse_sexp",
    "typed_list",
]

#: A parsed s-expression: a token or a list of s-expressions.
SExp = str | list["SExp"]
#: A literal of a schema: (predicate, arguments (``?var`` or constants), positive).
Literal = tuple[str, tuple[str, ...], bool]
#: A disjunct of a precondition: (existential parameters, literals).
Disjunct = tuple[tuple[tuple[str, str], ...], tuple[Literal, ...]]

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




def parse_formula(sexp: SExp) -> tuple[Any, ...]:
    """Return a formula as nested tuples.

    The forms are ``("atom", pred, args)``, ``("not", f)``, ``("and", fs)``, ``("or", fs)``,
    ``("imply", a, b)``, ``("exists", params, f)`` and ``("forall", params, f)``.

    Raises:
        ValueError: on a construct that is not a PDDL formula.
    """
    if not isinstance(sexp, list):
        raise ValueError(f"Expected a PDDL formula, found the token {sexp!r}.")
    if not sexp:
        return ("and", ())
    head = sexp[0]
    if head == "and":
        return ("and", tuple(parse_formula(part) for part in sexp[1:]))
    if head == "or":
        return ("or", tuple(parse_formula(part) for part in sexp[1:]))
    if head == "not":
        if len(sexp) != 2:
            raise ValueError(f"'not' takes one formula: {sexp!r}.")
        return ("not", parse_formula(sexp[1]))
    if head == "imply":
        return ("imply", parse_formula(sexp[1]), parse_formula(sexp[2]))
    if head in ("exists", "forall"):
        params = tuple(typed_list(sexp[1]))
        return (head, params, parse_formula(sexp[2]))
    if not isinstance(head, str) or any(not isinstance(arg, str) for arg in sexp[1:]):
        raise ValueError(f"Unsupported PDDL formula: {sexp!r}.")
    return ("atom", head, tuple(str(arg) for arg in sexp[1:]))


def dnf(formula: tuple[Any, ...], positive: bool = True) -> list[Disjunct]:
    """Put a precondition in disjunctive normal form: ``[(existential params, literals), ...]``.

    This mirrors fast_downward's normalisation (disjunctions split into several operators, existential
    variables moved into the parameters); universal quantifiers, which it compiles into axioms, are refused.
    """
    kind = formula[0]
    if kind == "atom":
        return [((), ((formula[1], formula[2], positive),))]
    if kind == "not":
        return dnf(formula[1], not positive)
    if kind == "imply":
        return dnf(("or", (("not", formula[1]), formula[2])), positive)
    if kind in ("and", "or"):
        conjunctive = (kind == "and") == positive
        parts = [dnf(part, positive) for part in formula[1]]
        if conjunctive:
            result: list[Disjunct] = [((), ())]
            for part in parts:
                result = [(p1 + p2, l1 + l2) for p1, l1 in result for p2, l2 in part]
            return result
        return [disjunct for part in parts for disjunct in part]
    if kind == "exists" and positive:
        return [(formula[1] + params, literals) for params, literals in dnf(formula[2], positive)]
    raise ValueError(f"Unsupported precondition construct {kind!r} (negated={not positive}) in {formula!r}.")


def distinct_variables(formula: tuple[Any, ...], taken: set[str], renames: dict[str, str] | None = None) -> Any:
    """Rename quantified variables that reuse a name in scope (as fast_downward's normalisation does)."""
    renames = renames or {}
    kind = formula[0]
    if kind == "atom":
        return ("atom", formula[1], tuple(renames.get(a, a) for a in formula[2]))
    if kind == "not":
        return ("not", distinct_variables(formula[1], taken, renames))
    if kind in ("and", "or"):
        return (kind, tuple(distinct_variables(part, taken, renames) for part in formula[1]))
    if kind == "imply":
        return ("imply", *(distinct_variables(part, taken, renames) for part in formula[1:]))
    params = []
    inner = dict(renames)
    for name, type_name in formula[1]:
        fresh = name
        counter = 0
        while fresh in taken:
            counter += 1
            fresh = f"{name}@{counter}"
        taken.add(fresh)
        inner[name] = fresh
        params.append((fresh, type_name))
    return (kind, tuple(params), distinct_variables(formula[2], taken, inner))
