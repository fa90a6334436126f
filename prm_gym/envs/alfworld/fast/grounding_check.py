"""The fast engine's grounding compared with fast_downward's translator, as TextWorld runs it.

:func:`translator_differences` grounds a game both ways and lists where they differ: the relaxed-reachable
atoms, the operators, and each operator's SAS+ effects (with their conditions, and on each atom the order of
the values it is set to, which decides TextWorld's fact set); and operators that share a name but not their
effects, where TextWorld and the fast engine could apply different ones. The parity sweep and the tests use
it; playing does not.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Iterable
from typing import Any

from prm_gym.envs.alfworld.fast.atoms import Atom
from prm_gym.envs.alfworld.fast.grounding import GroundGame
from prm_gym.envs.alfworld.fast.pddl import parse_domain

__all__ = ["translator_differences"]


def translator_differences(game_file: str | os.PathLike[str]) -> list[str]:
    """Return how the fast engine's grounding of ``game_file`` differs from fast_downward's (empty: no difference).

    Example:
        >>> from prm_gym.envs.alfworld.data import list_games
        >>> translator_differences(list_games("tiny", task_types="look")[0])
        []
    """
    with open(game_file, encoding="utf-8") as f:
        data = json.load(f)
    logic = GroundGame(parse_domain(data["pddl_domain"]), data["pddl_problem"])
    sas = _fast_downward_task(data["pddl_domain"], data["pddl_problem"])
    values = sas.variables.value_names
    problems = []
    expected_atoms = {values[var][0] for var in range(len(values)) if sas.variables.axiom_layers[var] == -1}
    atoms = {_name(atom, True) for atom in logic.reachable}
    if expected_atoms != atoms:
        problems.append(
            f"reachable atoms: only fast_downward {sorted(expected_atoms - atoms)[:3]}, "
            f"only fast {sorted(atoms - expected_atoms)[:3]}"
        )
    expected: dict[str, set[Any]] = {}
    for op in sas.operators:
        effects = [
            (values[var][post], tuple(sorted(values[v][x] for v, x in cond))) for var, _, post, cond in op.pre_post
        ]
        expected.setdefault(op.name[1:-1], set()).add(_canonical(effects))
    found: dict[str, set[Any]] = {}
    for key, variants in logic.operators().items():
        for ground in variants:
            effects = [(_name(a, v), tuple(sorted(_name(c, cv) for c, cv in cond))) for a, v, cond in ground.effects]
            found.setdefault(" ".join(key), set()).add(_canonical(effects))
    if set(expected) != set(found):
        problems.append(
            f"operators: only fast_downward {sorted(set(expected) - set(found))[:3]}, "
            f"only fast {sorted(set(found) - set(expected))[:3]}"
        )
    for name in sorted(set(expected) & set(found)):
        if expected[name] != found[name]:
            problems.append(f"effects of {name}: fast_downward {expected[name]}, fast {found[name]}")
            break
    # TextWorld applies the first applicable operator of a name in fast_downward's order, the fast engine the
    # first in its own: that only matters when operators sharing a name differ in their effects.
    ambiguous = sorted(" ".join(key) for key, variants in logic.operators().items() if len(set(variants)) > 1)
    if ambiguous:
        problems.append(f"operators sharing a name but not their effects: {ambiguous[:3]}")
    return problems


def _name(atom: Atom, value: bool) -> str:
    """Spell an atom as fast_downward's SAS+ value names do."""
    return ("Atom " if value else "NegatedAtom ") + f"{atom[0]}({', '.join(atom[1:])})"


def _canonical(effects: Iterable[tuple[str, tuple[str, ...]]]) -> Any:
    """Return the set of (effect, condition) pairs, and on each atom the order of the values it is set to."""
    effects = list(effects)
    order: dict[str, list[str]] = {}
    for effect, _ in effects:
        kind, atom = effect.split(" ", 1)
        order.setdefault(atom, []).append(kind)
    return frozenset(effects), tuple(sorted((atom, tuple(kinds)) for atom, kinds in order.items()))


def _fast_downward_task(domain: str, problem: str) -> Any:
    """Return the SAS+ task TextWorld's ``PddlState`` gets from fast_downward (``pddl2sas``, not optimised)."""
    saved_argv = sys.argv
    sys.argv = ["translate.py", "domain", "task"]  # fast_downward's options module parses sys.argv on import
    try:
        from fast_downward.translate import normalize, options, translate
        from fast_downward.translate.pddl_parser import lisp_parser, parsing_functions

        options.filter_unimportant_vars = False
        options.filter_unreachable_facts = False
        options.use_partial_encoding = False
        options.skip_variable_reordering = True
        options.add_implied_preconditions = False
        options.invariant_generation_max_candidates = 0
        with contextlib.redirect_stdout(io.StringIO()):
            task = parsing_functions.parse_task(
                lisp_parser.parse_nested_list(domain.split("\n")), lisp_parser.parse_nested_list(problem.split("\n"))
            )
            normalize.normalize(task)
            return translate.pddl_to_sas(task)
    finally:
        sys.argv = saved_argv
