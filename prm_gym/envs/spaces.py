"""A Gymnasium ``Text`` space whose strings survive ``AsyncVectorEnv``'s shared memory.

Gymnasium (1.4) has ``AsyncVectorEnv`` read its shared observation buffer once, when the vector env is built, and
keep the result: that works for ``Box`` spaces, where the read is a live numpy view, but a ``Text`` read makes
strings, so every later batch repeats the empty buffer ("000..."). :class:`GameText` is a plain
:class:`gymnasium.spaces.Text` whose shared-memory read returns :class:`SharedTexts`, a live view that decodes the
buffer when it is read, so ``gym.make_vec(..., vectorization_mode="async")`` works with its default settings.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import read_from_shared_memory

__all__ = ["GameText", "SharedTexts"]


class GameText(spaces.Text):
    """:class:`gymnasium.spaces.Text` for game text; identical except for ``AsyncVectorEnv``'s shared memory.

    Example:
        >>> space = GameText(max_length=16, charset="abc ")
        >>> space.contains("a cab")
        True
    """


class SharedTexts(Sequence[str]):
    """The strings in an ``AsyncVectorEnv``'s shared buffer, decoded each time they are read.

    ``deepcopy`` (what ``AsyncVectorEnv(copy=True)``, the default, returns) gives a plain ``tuple`` of ``str``.
    """

    def __init__(self, space: GameText, buffer: np.ndarray) -> None:
        """View ``buffer`` (``n x space.max_length`` charset indices, padded with ``len(charset)``)."""
        self._buffer = buffer
        self._codepoints = np.array([ord(c) for c in space.character_list], dtype="<u4")

    def __len__(self) -> int:
        """Return the number of sub-environments."""
        return len(self._buffer)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...
    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        """Decode one row (or a slice of rows) of the buffer."""
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        row = self._buffer[index]
        return self._codepoints[row[row < len(self._codepoints)]].tobytes().decode("utf-32-le")

    def __iter__(self) -> Iterator[str]:
        """Decode every row."""
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        """Compare as the tuple of strings it holds now."""
        return tuple(self) == (tuple(other) if isinstance(other, (SharedTexts, tuple, list)) else other)

    __hash__ = None  # type: ignore[assignment]  # a live view changes: not hashable, like a numpy array

    def __deepcopy__(self, memo: dict[int, Any]) -> tuple[str, ...]:
        """Return a snapshot: the tuple of strings the buffer holds now."""
        return copy.deepcopy(tuple(self), memo)

    def __repr__(self) -> str:
        """Show the strings it holds now."""
        return f"SharedTexts({tuple(self)!r})"


@read_from_shared_memory.register(GameText)
def _read_game_text(space: GameText, shared_memory: Any, n: int = 1) -> SharedTexts:
    buffer = np.frombuffer(shared_memory.get_obj(), dtype=np.int32).reshape((n, space.max_length))
    return SharedTexts(space, buffer)
