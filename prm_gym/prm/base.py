"""The reward-model interface: the one thing the reward wrappers know about a model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from prm_gym.prm.context import Context

__all__ = ["RewardModel"]


@runtime_checkable
class RewardModel(Protocol):
    """Scores proposed actions: ``score(contexts)[i]`` in [0, 1] estimates Q(state, action) of ``contexts[i]``.

    Implementations score a whole batch at once (one forward pass, or one set of rollouts), so callers should
    pass every context they have rather than one at a time. Every context must propose an action.

    Example:
        >>> class Constant:
        ...     def score(self, contexts):
        ...         return [0.5] * len(contexts)
        >>> isinstance(Constant(), RewardModel)
        True
    """

    def score(self, contexts: Sequence[Context]) -> list[float]:
        """Return one score in [0, 1] per context, in order."""
