"""Ground atoms for the fast engine, and an index that finds them by some of their arguments."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

__all__ = ["Atom", "AtomIndex", "negated"]

#: A ground atom: ``(predicate, arg, ...)``, lower-case names as fast_downward spells them.
Atom = tuple[str, ...]


def negated(atom: Atom) -> Atom:
    """Return TextWorld's ``not_`` fact for ``atom`` (what a deleted fact leaves behind in its fact set).

    Example:
        >>> negated(("opened", "fridge_bar__minus_01"))
        ('not_opened', 'fridge_bar__minus_01')
    """
    return ("not_" + atom[0], *atom[1:])


class AtomIndex:
    """A growing set of atoms, found by predicate and by the values at some argument positions.

    Buckets for a (predicate, positions) pattern are built on first lookup and kept up to date by :meth:`add`.

    Example:
        >>> index = AtomIndex([("in", "apple", "fridge"), ("in", "egg", "fridge"), ("in", "egg", "bowl")])
        >>> index.lookup("in", (2,), ("fridge",))
        [('in', 'apple', 'fridge'), ('in', 'egg', 'fridge')]
    """

    def __init__(self, atoms: Iterable[Atom] = ()) -> None:
        """Index ``atoms``."""
        self._by_pred: dict[str, list[Atom]] = defaultdict(list)
        self._patterns: dict[str, list[tuple[int, ...]]] = defaultdict(list)
        self._buckets: dict[tuple[str, tuple[int, ...]], dict[tuple[str, ...], list[Atom]]] = {}
        #: Every atom indexed.
        self.atoms: set[Atom] = set()
        for atom in atoms:
            self.add(atom)

    def add(self, atom: Atom) -> bool:
        """Add ``atom``; return whether it is new."""
        if atom in self.atoms:
            return False
        self.atoms.add(atom)
        self._by_pred[atom[0]].append(atom)
        for positions in self._patterns.get(atom[0], ()):
            key = tuple(atom[i] for i in positions)
            self._buckets[(atom[0], positions)].setdefault(key, []).append(atom)
        return True

    def size(self, pred: str) -> int:
        """Return the number of atoms of ``pred``."""
        return len(self._by_pred.get(pred, ()))

    def lookup(self, pred: str, positions: tuple[int, ...], values: tuple[str, ...]) -> list[Atom]:
        """Return the atoms of ``pred`` with ``values`` at ``positions`` (1-based: ``atom[i]``), in insertion order."""
        if not positions:
            return self._by_pred.get(pred, [])
        buckets = self._buckets.get((pred, positions))
        if buckets is None:
            buckets = {}
            for atom in self._by_pred.get(pred, ()):
                buckets.setdefault(tuple(atom[i] for i in positions), []).append(atom)
            self._buckets[(pred, positions)] = buckets
            self._patterns[pred].append(positions)
        return buckets.get(values, [])
