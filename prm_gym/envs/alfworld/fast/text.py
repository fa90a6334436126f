"""Text for the fast engine: TextWorld's grammar derivation and queries, on the fast engine's states.

:class:`TextGenerator` expands compiled grammar symbols in a state. Queries are answered as
``textworld.logic.State.all_assignments`` answers them: depth first over the query's predicates, each
predicate's facts visited signature by signature (in the order of ``TypeHierarchy.multi_subtypes``) and
sorted within a signature, a new placeholder never taking an object some other placeholder holds. Object
names are ALFWorld's (``Demangler``, unshuffled): TextWorld lower-cases entity ids (fast_downward does), and
the demangler numbers instances of a class in reverse sorted-id order.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from typing import Any

from prm_gym.envs.alfworld.fast.atoms import Atom
from prm_gym.envs.alfworld.fast.grammar import Conditional, Eval, Grammar, Nodes, Query, Symbol, Text, Var
from prm_gym.envs.alfworld.fast.pddl import Domain

__all__ = ["Entity", "TextGenerator", "demangled_names", "mapping_of"]


class Entity:
    """What TextWorld's ``EntityInfo`` holds for an ALFWorld object; grammar expressions read it.

    Example:
        >>> apple = Entity("apple_bar__plus_01", "object", "apple 1")
        >>> str(apple), apple.definite
        ('apple 1', 'the')
    """

    __slots__ = ("id", "type", "name", "noun", "adj", "desc", "room_type", "definite", "indefinite", "synonyms")

    def __init__(self, id: str, type: str, name: str) -> None:  # noqa: A002 - EntityInfo's field name
        """Create the entity ``id`` of ``type``, displayed as ``name`` (articles as ``PddlEnv`` sets them)."""
        self.id = id
        self.type = type
        self.name = name
        self.noun = self.adj = self.desc = self.room_type = self.synonyms = None
        self.definite = "the"
        self.indefinite = "a"

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Entity({self.id!r}, {self.type!r}, {self.name!r})"


def demangled_names(ids: Iterable[str]) -> dict[str, str]:
    """Return ALFWorld's display names for object ids (``alfworld.agents.utils.misc.Demangler``, unshuffled).

    Example:
        >>> demangled_names(["apple_bar__plus_01", "apple_bar__minus_02", "agent1"])
        {'agent1': 'agent1 ', 'apple_bar__minus_02': 'apple 2', 'apple_bar__plus_01': 'apple 1'}
    """
    ids = sorted(ids)
    counts: dict[str, int] = {}
    for id_ in ids:
        splits = id_.split("_bar_", 1)
        if len(splits) > 1:
            name = splits[0] + ("basin" if "basin" in id_ else "")
            counts[name] = counts.get(name, 0) + 1
    numbers = {name: list(range(1, count + 1)) for name, count in counts.items()}
    names: dict[str, str] = {}
    for id_ in ids:
        text = id_.replace("_bar_", "|").replace("_minus_", "-").replace("_plus_", "+")
        text = text.replace("_dot_", ".").replace("_comma_", ",")
        splits = text.split("|", 1)
        if len(splits) == 1:
            names[id_] = f"{text} "
        else:
            name = splits[0] + ("basin" if "basin" in id_ else "")
            number = numbers[name].pop()
            names[id_] = f"{name} {number}" if number > 0 else f"{name} "
    return names


def _subtype_orders(domain: Domain) -> dict[str, list[str]]:
    """Return the direct children of each type as TextWorld's ``TypeHierarchy`` records them (sorted)."""
    children: dict[str, list[str]] = defaultdict(list)
    for name in domain.type_order:
        for parent in domain.supertypes.get(name, ()):
            if name not in children[parent]:
                children[parent].append(name)
    return {name: sorted(kids) for name, kids in children.items()}


def _multi_subtypes(types: tuple[str, ...], children: dict[str, list[str]]) -> list[tuple[str, ...]]:
    """Return ``TypeHierarchy.multi_subtypes``: the types, then a breadth-first walk down the hierarchy."""

    def expand(current: tuple[str, ...]) -> Iterable[tuple[str, ...]]:
        for i in range(len(current)):
            expansion = list(current)
            for child in children.get(current[i], ()):
                expansion[i] = child
                yield tuple(expansion)

    result = [types]
    seen: set[tuple[str, ...]] = set()
    queue = deque(expand(types))
    while queue:
        item = queue.popleft()
        result.append(item)
        for expansion in expand(item):
            if expansion not in seen:
                seen.add(expansion)
                queue.append(expansion)
    return result


class TextGenerator:
    """A game's text generation: entities, facts TextWorld's grammar can query, and derivation.

    Args:
        grammar: the compiled grammar.
        domain: the game's domain (for the type hierarchy).
        object_types: declared type of every object.
        static_facts: facts no action changes.
        dynamic_facts: every fact of a fluent predicate the text state may ever hold.
        dynamic_predicates: predicates whose facts live in the text state (``not_`` ones included).
        entity_ids: the objects TextWorld makes entities of (those in the initial facts).

    Example:
        >>> from prm_gym.envs.alfworld.data import list_games
        >>> from prm_gym.envs.alfworld.fast.game import load_game
        >>> game = load_game(str(list_games("tiny", task_types="look")[0].resolve()))
        >>> state = game.start()
        >>> intro = game.text.derive(game.grammar.intro, {}, state.text_state)
        >>> intro == state.turn.feedback, intro.splitlines()[-1]
        (True, 'Your task is to: look at book under the desklamp.')
    """

    def __init__(
        self,
        grammar: Grammar,
        domain: Domain,
        object_types: dict[str, str],
        static_facts: frozenset[Atom],
        dynamic_facts: Iterable[Atom],
        dynamic_predicates: frozenset[str],
        entity_ids: Iterable[str],
    ) -> None:
        #: The compiled grammar.
        self.grammar = grammar
        self._types = object_types
        self._children = _subtype_orders(domain)
        self._known_types = frozenset(domain.type_order)
        self._dynamic = dynamic_predicates
        self._by_pred: dict[str, list[Atom]] = defaultdict(list)
        for atom in static_facts:
            self._by_pred[atom[0]].append(atom)
        for atom in dynamic_facts:
            self._by_pred[atom[0]].append(atom)
        self._candidates: dict[tuple[Any, ...], tuple[Atom, ...]] = {}
        self._by_position: dict[tuple[str, int], dict[str, list[Atom]]] = {}
        ids = set(entity_ids)
        names = demangled_names(ids)
        #: ``{object id: Entity}`` for every entity.
        self.entities: dict[str, Entity] = {i: Entity(i, object_types.get(i, i), names[i]) for i in sorted(ids)}
        self._subtypes: dict[tuple[str, ...], list[tuple[str, ...]]] = {}

    # -- derivation --------------------------------------------------------------------------------------

    def derive(self, nodes: Nodes, mapping: dict[Var, Var], state: frozenset[Atom]) -> str:
        """Expand compiled symbols in a context (``mapping``: placeholder -> variable) and a text state."""
        out: list[str] = []
        self._expand(nodes, mapping, state, out)
        return "".join(out)

    def _expand(self, nodes: Nodes, mapping: dict[Var, Var], state: frozenset[Atom], out: list[str]) -> None:
        for node in nodes:
            kind = type(node)  # one dispatch on the exact NamedTuple class: this loop is the hot path
            if kind is Text:
                out.append(node.text)  # type: ignore[union-attr]
            elif kind is Symbol:
                self._nonterminal(node.name, mapping, state, out)  # type: ignore[union-attr]
            elif kind is Conditional:
                expression, query = node  # type: ignore[misc]
                if query is None:
                    self._expression(expression, mapping, state, out)
                else:
                    for context in self.assignments(query, mapping, state):
                        self._expression(expression, context, state, out)
            else:  # ListOf: a list, "a, b, and c"
                expression, query = node.conditional  # type: ignore[union-attr]
                contexts = [mapping] if query is None else self.assignments(query, mapping, state)
                if not contexts:
                    self._nonterminal("list_empty", mapping, state, out)
                last = len(contexts) - 1
                for i, context in enumerate(contexts):
                    if i:
                        self._nonterminal("list_last_separator" if i == last else "list_separator", mapping, state, out)
                    self._expression(expression, context, state, out)

    def _expression(self, node: Symbol | Eval, mapping: dict[Var, Var], state: frozenset[Atom], out: list[str]) -> None:
        if type(node) is Symbol:
            self._nonterminal(node.name, mapping, state, out)
        else:
            entities = self.entities
            variables = {ph[0]: entities[var[0]] for ph, var in mapping.items()}
            out.append(str(node.evaluate(variables)))  # type: ignore[union-attr]

    def _nonterminal(self, name: str, mapping: dict[Var, Var], state: frozenset[Atom], out: list[str]) -> None:
        rules = self.grammar.rules.get(name)
        if not rules:
            raise ValueError(f"Can't find symbol '#{name}#' in the set of production rules.")
        for query, rhs in rules:
            if query is None or self.assignments(query, mapping, state, first=True):
                self._expand(rhs, mapping, state, out)
                return
        raise ValueError(f"No production rule of '#{name}#' applies in this state.")

    # -- queries -----------------------------------------------------------------------------------------

    def assignments(
        self, query: Query, mapping: dict[Var, Var], state: frozenset[Atom], first: bool = False
    ) -> list[dict[Var, Var]]:
        """Solve ``query`` extending ``mapping``, in TextWorld's order (only the first solution if ``first``)."""
        results: list[dict[Var, Var]] = []
        current = dict(mapping)
        used = set(current.values())
        types = self._types
        dynamic = self._dynamic
        depth_max = len(query)

        def search(depth: int) -> bool:
            if depth == depth_max:
                results.append(dict(current))
                return first
            pred, placeholders, ph_types = query[depth]
            bound = tuple((i, current[ph]) for i, ph in enumerate(placeholders) if ph in current)
            is_dynamic = pred in dynamic
            for atom in self._facts(pred, ph_types, bound):
                if is_dynamic and atom not in state:
                    continue
                new: list[Var] = []
                ok = True
                for ph, name in zip(placeholders, atom[1:], strict=False):
                    var = (name, types[name])
                    existing = current.get(ph)
                    if existing is None:
                        if var in used:
                            ok = False
                            break
                        current[ph] = var
                        used.add(var)
                        new.append(ph)
                    elif existing != var:
                        ok = False
                        break
                if ok and search(depth + 1):
                    return True
                for ph in new:
                    used.discard(current.pop(ph))
            return False

        search(0)
        return results

    def _facts(self, pred: str, ph_types: tuple[str, ...], bound: tuple[tuple[int, Var], ...]) -> tuple[Atom, ...]:
        """Return the facts of ``pred`` that may match, in ``State._all_applicable_assignments``'s order."""
        key = (pred, ph_types, bound)
        found = self._candidates.get(key)
        if found is None:
            combos = self._subtypes.get(ph_types)
            if combos is None:
                unknown = [t for t in ph_types if t not in self._known_types]
                if unknown:
                    raise ValueError(f"Unknown type(s) {unknown} in a grammar query on {pred!r}.")
                combos = self._subtypes[ph_types] = _multi_subtypes(ph_types, self._children)
            types = self._types
            if bound:
                # Facts sharing the first bound argument, from a per-position index built on first use.
                position, (name, type_name) = bound[0]
                index = self._by_position.get((pred, position))
                if index is None:
                    index = self._by_position[(pred, position)] = defaultdict(list)
                    for atom in self._by_pred.get(pred, ()):
                        if len(atom) > position + 1:
                            index[atom[position + 1]].append(atom)
                pool = index.get(name, []) if types.get(name) == type_name else []
            else:
                pool = self._by_pred.get(pred, [])
            by_signature: dict[tuple[str, ...], list[Atom]] = defaultdict(list)
            for atom in pool:
                if len(atom) != len(ph_types) + 1:
                    continue
                if all(atom[i + 1] == var[0] and types.get(var[0]) == var[1] for i, var in bound):
                    by_signature[tuple(types[arg] for arg in atom[1:])].append(atom)
            ordered: list[Atom] = []
            for combo in combos:
                ordered.extend(sorted(by_signature.get(combo, ())))
            found = self._candidates[key] = tuple(ordered)
        return found


def mapping_of(parameters: Sequence[tuple[str, str]], arguments: Sequence[str]) -> dict[Var, Var]:
    """Build an action's context, ``{(param name, param type): (argument, param type)}``, as ``PddlState`` does."""
    pairs = zip(parameters, arguments, strict=False)
    return {(name.strip("?"), type_name): (arg, type_name) for (name, type_name), arg in pairs}
