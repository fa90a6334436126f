"""A Gymnasium ``Text`` space for game text: any string is a member, and any string survives ``AsyncVectorEnv``.

A game may print any Unicode text of any length (and an agent may type any), so :class:`GameText` admits every
``str``; its ``charset`` and ``max_length`` only shape :meth:`~GameText.sample` and the size of the shared-memory
slots below. Gymnasium's own ``Text`` shared memory (1.4) stores charset indices in ``max_length`` slots, so it fails
on a character outside the charset (``KeyError``) or a longer string (``IndexError``), and ``AsyncVectorEnv`` reads
it once, when the vector env is built, so every later batch would repeat the empty buffer. :class:`GameText`
registers its own: :class:`TextSlots` holds each sub-env's text as code points (lone surrogates included) in
``max_length`` slots, and sends a longer text through a queue; :class:`SharedTexts` is the live view the parent reads,
so ``gym.make_vec(..., vectorization_mode="async")`` works with its default settings and returns the exact strings.
"""

from __future__ import annotations

import copy
import multiprocessing as mp
import queue
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any, overload

import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

__all__ = ["GameText", "SharedTexts", "TextSlots"]

#: How long the parent waits for a long text a sub-env has already sent (a hang catcher: it is there at once).
_OVERFLOW_WAIT_S = 60.0


class GameText(spaces.Text):
    """:class:`gymnasium.spaces.Text` whose members are all strings (at least ``min_length`` long).

    ``charset`` and ``max_length`` are what :meth:`sample` draws from; they bound nothing else.

    Example:
        >>> space = GameText(max_length=16, charset="abc ")
        >>> space.contains("a cab"), space.contains("Ünïcode ™ " * 10), space.contains(b"bytes")
        (True, True, False)
    """

    def contains(self, x: Any) -> bool:
        """Return whether ``x`` is a ``str`` of at least ``min_length`` characters."""
        return isinstance(x, str) and len(x) >= self.min_length


class TextSlots:
    """An ``AsyncVectorEnv``'s shared texts: one slot of ``capacity`` code points per sub-env, and a queue.

    A text of up to ``capacity`` characters is written into its sub-env's slot; a longer one is put on the queue,
    and the slot's length says which message to wait for. Workers write, the parent reads (:meth:`read`).
    """

    def __init__(self, n: int, capacity: int, ctx: ModuleType | Any = mp) -> None:
        """Allocate ``n`` slots of ``capacity`` characters with the multiprocessing context ``ctx``."""
        self.capacity = capacity
        # Per sub-env: the text's length when it is in the slot, or -k for the k-th long text sent on the queue.
        self.lengths = ctx.Array("q", n)
        self.codes = ctx.Array("I", n * capacity)
        self.overflow = ctx.Queue()
        self._sent: dict[int, int] = {}
        self._received: dict[int, tuple[int, str]] = {}

    def write(self, index: int, text: str) -> None:
        """Store sub-env ``index``'s text (in a worker)."""
        data = text.encode("utf-32-le", "surrogatepass")
        length = len(data) // 4
        if length <= self.capacity:
            start = index * self.capacity
            self._slots()[start : start + length] = np.frombuffer(data, dtype="<u4")
            self.lengths[index] = length
            return
        sequence = self._sent.get(index, 0) + 1
        self._sent[index] = sequence
        # A worker must not wait at exit for the parent to read texts it never asked for.
        self.overflow.cancel_join_thread()
        self.overflow.put((index, sequence, text))
        self.lengths[index] = -sequence

    def read(self, index: int) -> str:
        """Return sub-env ``index``'s latest text (in the parent).

        Raises:
            RuntimeError: when a long text the slot announces never arrives (its worker died).
        """
        length = self.lengths[index]
        if length >= 0:
            start = index * self.capacity
            return self._slots()[start : start + length].tobytes().decode("utf-32-le", "surrogatepass")
        sequence = -length
        while self._received.get(index, (0, ""))[0] < sequence:
            try:
                sender, number, text = self.overflow.get(timeout=_OVERFLOW_WAIT_S)
            except queue.Empty:
                raise RuntimeError(f"Sub-env {index}'s observation never arrived: its worker process died.") from None
            self._received[sender] = (number, text)
        return self._received[index][1]

    def _slots(self) -> np.ndarray:
        return np.frombuffer(self.codes.get_obj(), dtype=np.uint32)


class SharedTexts(Sequence[str]):
    """The strings in an ``AsyncVectorEnv``'s :class:`TextSlots`, read each time they are accessed.

    ``deepcopy`` (what ``AsyncVectorEnv(copy=True)``, the default, returns) gives a plain ``tuple`` of ``str``.
    """

    def __init__(self, slots: TextSlots, n: int) -> None:
        """View the first ``n`` slots of ``slots``."""
        self._slots = slots
        self._n = n

    def __len__(self) -> int:
        """Return the number of sub-environments."""
        return self._n

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...
    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        """Read one slot (or a slice of slots)."""
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        if not -self._n <= index < self._n:
            raise IndexError(f"Sub-env index {index} is out of range for {self._n} sub-envs.")
        return self._slots.read(index % self._n)

    def __iter__(self) -> Iterator[str]:
        """Read every slot."""
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        """Compare as the tuple of strings it holds now."""
        return tuple(self) == (tuple(other) if isinstance(other, (SharedTexts, tuple, list)) else other)

    __hash__ = None  # type: ignore[assignment]  # a live view changes: not hashable, like a numpy array

    def __deepcopy__(self, memo: dict[int, Any]) -> tuple[str, ...]:
        """Return a snapshot: the tuple of strings the slots hold now."""
        return copy.deepcopy(tuple(self), memo)

    def __repr__(self) -> str:
        """Show the strings it holds now."""
        return f"SharedTexts({tuple(self)!r})"


@create_shared_memory.register(GameText)
def _create_game_text(space: GameText, n: int = 1, ctx: ModuleType = mp) -> TextSlots:
    return TextSlots(n, space.max_length, ctx)


@read_from_shared_memory.register(GameText)
def _read_game_text(space: GameText, shared_memory: TextSlots, n: int = 1) -> SharedTexts:
    return SharedTexts(shared_memory, n)


@write_to_shared_memory.register(GameText)
def _write_game_text(space: GameText, index: int, value: str, shared_memory: TextSlots) -> None:
    shared_memory.write(index, value)
