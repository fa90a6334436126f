"""SAS+ operators for the fast engine: ground action variants translated as fast_downward's translator does.

TextWorld's ``PddlEnv`` applies fast_downward's SAS+ operators, so the fast engine needs the same operators:
the same effects (add effects the precondition already implies dropped, deletes of unreachable atoms
dropped, conditional effects pruned as ``translate.py`` prunes them) in the same order, since TextWorld
updates its fact set with every effect of an operator, in order, whether its condition fired or not.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import NamedTuple

from prm_gym.envs.alfworld.fast.atoms import Atom, negated
from prm_gym.envs.alfworld.fast.pddl import ActionSchema
from prm_gym.envs.alfworld.fast.syntax import Literal

__all__ = ["Condition", "GroundOperator", "SasEffect", "SasTranslator", "Variant"]

#: A conjunction of fluent literals: ``((atom, value), ...)``, as a partial assignment's items.
Condition = tuple[tuple[Atom, bool], ...]
#: Translated effect conditions: ``{atom: {value set: [condition as {atom: value}, ...]}}``.
_ConditionsByAtom = dict[Atom, dict[bool, list[dict[Atom, bool]]]]


class SasEffect(NamedTuple):
    """An SAS+ effect: ``atom`` set to ``value`` when ``condition`` holds (always when it is empty).

    A NamedTuple, so effects sort as fast_downward orders them (atom, then value, then condition).

    Example:
        >>> SasEffect(("opened", "fridge"), True, ()) < SasEffect(("opened", "fridge"), True, ((("on", "lamp"), True),))
        True
    """

    atom: Atom
    value: bool
    condition: Condition


class _CondEffect(NamedTuple):
    """A ground effect before translation: ``atom`` added or deleted when ``condition`` holds."""

    condition: Condition
    atom: Atom


class GroundOperator(NamedTuple):
    """A ground action (one precondition variant) as fast_downward's translator emits it.

    Example:
        >>> from prm_gym.envs.alfworld.data import list_games
        >>> from prm_gym.envs.alfworld.fast.grounding import GroundGame
        >>> from prm_gym.envs.alfworld.fast.pddl import load_game_json, parse_domain
        >>> data = load_game_json(list_games("tiny", task_types="look")[0])
        >>> game = GroundGame(parse_domain(data["pddl_domain"]), data["pddl_problem"])
        >>> go = game.applicable(game.initial_true)[0]  # go to bed 1
        >>> [(effect.atom[0], effect.value) for effect in go.effects]  # the agent arrives at the bed, leaves its start
        [('atlocation', True), ('atlocation', False)]
        >>> sorted(atom[0] for atom in go.text_add)  # TextWorld's fact set keeps a "not_" fact for the deleted one
        ['atlocation', 'not_atlocation']
    """

    #: ``(action name, argument, ...)`` over the action's own parameters: fast_downward's operator name.
    key: tuple[str, ...]
    #: Fluent atoms that must hold / must not hold.
    pre_true: tuple[Atom, ...]
    pre_false: tuple[Atom, ...]
    #: SAS+ effects in fast_downward's order (sorted), conditions kept.
    effects: tuple[SasEffect, ...]
    #: Unconditional summary of the effects on the true state, or None when some effect is conditional.
    true_add: tuple[Atom, ...] | None
    true_del: tuple[Atom, ...] | None
    #: What TextWorld's fact set gains and loses (all effects applied, the last one on an atom winning).
    text_add: tuple[Atom, ...]
    text_del: tuple[Atom, ...]
    #: Predicates of the atoms the effects may change.
    predicates: tuple[str, ...]


class Variant(NamedTuple):
    """A relaxed-reachable ground variant of an action, which :class:`SasTranslator` turns into an operator.

    :class:`~prm_gym.envs.alfworld.fast.grounding.GroundGame` makes them while grounding; a variant is an
    action bound to objects, one per disjunct of its precondition.
    """

    #: fast_downward's operator name: ``(action name, argument, ...)``.
    key: tuple[str, ...]
    #: Every parameter of the variant (the action's and the existential ones), with its object.
    binding: tuple[tuple[str, str], ...]
    #: Fluent atoms that must hold / must not hold.
    pre_true: tuple[Atom, ...]
    pre_false: tuple[Atom, ...]


class SasTranslator:
    """Translates a game's ground variants into SAS+ operators.

    Args:
        fluent_predicates: predicates some action changes.
        reachable: the fluent atoms fast_downward finds relaxed-reachable (its SAS+ variables).
        holds_static: whether a static fact (or an ``=`` test) holds.
        actions: the domain's action schemas, by name.

    :class:`~prm_gym.envs.alfworld.fast.grounding.GroundGame` uses one to translate its variants when it
    grounds a game (see :class:`GroundOperator`'s example for what comes out).
    """

    def __init__(
        self,
        fluent_predicates: frozenset[str],
        reachable: frozenset[Atom],
        holds_static: Callable[[str, tuple[str, ...]], bool],
        actions: dict[str, ActionSchema],
    ) -> None:
        self._fluent = fluent_predicates
        self._reachable = reachable
        self._holds_static = holds_static
        self._actions = actions
        # One SasEffect per (atom, value) for the unconditional effects, shared by the operators: NamedTuples,
        # unlike plain tuples, stay tracked by the cyclic GC, so fewer of them keep its full collections short.
        self._shared: dict[tuple[Atom, bool], SasEffect] = {}
        # The add and delete literals of each action without conditional effects (the common case).
        self._plain: dict[str, tuple[tuple[Literal, ...], tuple[Literal, ...]]] = {
            name: (
                tuple(effect.literal for effect in action.effects if effect.literal.positive),
                tuple(effect.literal for effect in action.effects if not effect.literal.positive),
            )
            for name, action in actions.items()
            if not any(effect.condition for effect in action.effects)
        }

    def translate(self, variant: Variant) -> GroundOperator | None:
        """Return the variant's SAS+ operator as fast_downward's ``translate_strips_operator`` builds it.

        Returns None when the operator changes nothing (fast_downward drops it). An action without
        conditional effects takes the short way (:meth:`_unconditional`); otherwise the effects are grounded
        (:meth:`_ground_effects`), their conditions translated per atom (:func:`_conditions_by_atom`) and
        pruned against the precondition (:func:`_sas_effects`).
        """
        binding = dict(variant.binding)
        plain = self._plain.get(variant.key[0])
        if plain is not None:
            return self._unconditional(variant, *plain, binding)
        adds, dels = self._ground_effects(variant, binding)
        pre = {atom: True for atom in variant.pre_true}
        pre.update((atom, False) for atom in variant.pre_false)
        effects = _sas_effects(_conditions_by_atom(adds, dels), pre)
        # fast_downward sorts effects by (variable, pre, post, condition): on one atom, True (value 0) first.
        return _operator(variant, tuple(sorted(effects, key=lambda e: (e.atom, not e.value, e.condition))))

    def _ground_effects(self, variant: Variant, binding: dict[str, str]) -> tuple[list[_CondEffect], list[_CondEffect]]:
        """Ground the action's effects: (add effects, delete effects), each ``(condition, atom)``.

        Static condition literals are decided and dropped, an effect whose condition cannot hold is dropped
        (a false static literal, an unreachable positive fluent), as are deletes of unreachable atoms and
        deletes that are also adds under the same condition.
        """
        fluent = self._fluent
        reachable = self._reachable
        adds: list[_CondEffect] = []
        dels: list[_CondEffect] = []
        for effect in self._actions[variant.key[0]].effects:
            condition: list[tuple[Atom, bool]] = []
            possible = True
            for pred, args, positive in effect.condition:
                ground = tuple(binding.get(a, a) for a in args)
                if pred in fluent:
                    atom = (pred, *ground)
                    if atom in reachable:
                        condition.append((atom, positive))
                    elif positive:
                        possible = False
                        break
                elif self._holds_static(pred, ground) != positive:
                    possible = False
                    break
            if not possible:
                continue
            pred, args, positive = effect.literal
            atom = (pred, *(binding.get(a, a) for a in args))
            if positive:
                adds.append(_CondEffect(tuple(condition), atom))
            elif atom in reachable:
                dels.append(_CondEffect(tuple(condition), atom))
        return adds, [effect for effect in dels if effect not in adds]

    def _unconditional(
        self, variant: Variant, adds: tuple[Literal, ...], deletes: tuple[Literal, ...], binding: dict[str, str]
    ) -> GroundOperator | None:
        """Translate a variant without conditional effects (the common case of :meth:`translate`).

        An add effect whose atom the precondition already requires is dropped; a delete effect is dropped
        when its atom is unreachable, also added, or already required false; the guard fast_downward puts
        on a delete (the atom must hold) is pruned away again since nothing adds the atom.
        """
        get = binding.get
        added = {(pred, *[get(a, a) for a in args]) for pred, args, _ in adds}
        values = {atom: True for atom in added if atom not in variant.pre_true}
        reachable = self._reachable
        for pred, args, _ in deletes:
            atom = (pred, *[get(a, a) for a in args])
            if atom in reachable and atom not in added and atom not in variant.pre_false:
                values[atom] = False
        # One effect per atom: fast_downward's order is the atoms' (sorted as plain tuples, CPython's fast path).
        shared = self._shared
        effects = []
        for pair in sorted(values.items()):
            effect = shared.get(pair)
            if effect is None:
                effect = shared[pair] = SasEffect(*pair, ())
            effects.append(effect)
        return _operator(variant, tuple(effects))


def _conditions_by_atom(adds: list[_CondEffect], dels: list[_CondEffect]) -> _ConditionsByAtom:
    """Translate effect conditions into ``{atom: {value set: [condition, ...]}}`` as fast_downward does.

    Contradictory conditions are dropped; a delete is guarded by its atom holding and by no add effect on
    the atom firing (the negated add conditions), and dropped when some add on the atom always fires.
    """
    by_atom: _ConditionsByAtom = defaultdict(lambda: defaultdict(list))
    add_conditions: dict[Atom, list[Condition]] = defaultdict(list)
    for cond, atom in adds:
        translated = _translate_condition(cond)
        if translated is None:
            continue
        by_atom[atom][True].append(translated)
        add_conditions[atom].append(cond)
    del_by_atom: dict[Atom, list[dict[Atom, bool]]] = defaultdict(list)
    for cond, atom in dels:
        translated = _translate_condition(cond)
        if translated is None:
            continue
        del_by_atom[atom].append(translated)
    for atom, conds in del_by_atom.items():
        no_add = _negate_dnf(add_conditions[atom])
        if no_add is None:
            continue  # some add effect on the atom always fires
        for guarded in conds:
            if guarded.get(atom, True) is not True:
                continue
            guarded[atom] = True
            for extra in no_add:
                merged = dict(guarded)
                if all(merged.setdefault(a, v) == v for a, v in extra.items()):
                    by_atom[atom][False].append(merged)
    return by_atom


def _sas_effects(by_atom: _ConditionsByAtom, pre: dict[Atom, bool]) -> set[SasEffect]:
    """Return the SAS+ effects of translated conditions, pruned as fast_downward prunes them.

    An effect setting the value the precondition already requires is dropped; a condition on the effect's
    own atom is dropped when nothing sets the other value (``prune_stupid_effect_conditions``); condition
    literals the precondition implies are dropped, and an effect whose condition contradicts it too.
    """
    effects: set[SasEffect] = set()
    for atom, on_atom in by_atom.items():
        pre_value = pre.get(atom)
        for post, conds in on_atom.items():
            if pre_value == post:
                continue
            lists = [sorted(c.items()) for c in conds]
            # prune_stupid_effect_conditions (binary variables)
            if (not post) not in on_atom and lists != [[]]:
                for c in lists:
                    while (atom, not post) in c:
                        c.remove((atom, not post))
                    if not c:
                        lists = [[]]
                        break
            for c in lists:
                filtered = []
                contradicts = False
                for cond_atom, value in c:
                    if cond_atom in pre:
                        if pre[cond_atom] != value:
                            contradicts = True
                            break
                    else:
                        filtered.append((cond_atom, value))
                if not contradicts:
                    effects.add(SasEffect(atom, post, tuple(filtered)))
    return effects


def _translate_condition(condition: Iterable[tuple[Atom, bool]]) -> dict[Atom, bool] | None:
    """Turn a conjunction of literals into a partial assignment (None when contradictory)."""
    result: dict[Atom, bool] = {}
    for atom, value in condition:
        if result.setdefault(atom, value) != value:
            return None
    return result


def _operator(variant: Variant, ordered: tuple[SasEffect, ...]) -> GroundOperator | None:
    """Build the operator of ``variant`` from its SAS+ effects in fast_downward's order (None when there are none)."""
    if not ordered:
        return None  # fast_downward drops operators that change nothing
    # Unpacked rather than read by name here and below: a NamedTuple's field access costs more, on every game load.
    final = {atom: value for atom, value, _ in ordered}  # TextWorld applies them all, in order: the last one wins
    text_add: list[Atom] = []
    text_del: list[Atom] = []
    true_add: list[Atom] = []
    true_del: list[Atom] = []
    for atom, value in final.items():
        if value:
            text_add.append(atom)
            text_del.append(negated(atom))
            true_add.append(atom)
        else:
            text_add.append(negated(atom))
            text_del.append(atom)
            true_del.append(atom)
    plain = all(not condition for _, _, condition in ordered)
    return GroundOperator(
        variant.key,
        variant.pre_true,
        variant.pre_false,
        ordered,
        tuple(true_add) if plain else None,
        tuple(true_del) if plain else None,
        tuple(text_add),
        tuple(text_del),
        tuple(dict.fromkeys(atom[0] for atom in final)),
    )


def _negate_dnf(conditions: list[Condition]) -> list[dict[Atom, bool]] | None:
    """Negate a disjunction of conditions as fast_downward's ``negate_and_translate_condition`` does.

    Returns None when some condition is always true.
    """
    if any(not cond for cond in conditions):
        return None
    negation: list[dict[Atom, bool]] = []
    for combination in itertools.product(*conditions):
        translated = _translate_condition((atom, not value) for atom, value in combination)
        if translated is not None:
            negation.append(translated)
    return negation or None

