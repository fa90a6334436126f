"""The reward-model interface, and :func:`checked_scores`, the one way its scores are read.

Every consumer of scores (the reward wrappers, Best-of-N) calls :func:`checked_scores` rather than
``model.score``, so a model that returns too few scores, NaN or values outside [0, 1] is stopped at once with
one clear error, instead of turning into ``reward=nan`` or winning a ``max`` by accident.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from prm_gym.prm.context import Context

__all__ = ["RewardModel", "checked_scores"]


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


def checked_scores(model: RewardModel, contexts: Sequence[Context]) -> list[float]:
    """Return ``model.score(contexts)`` as floats, after checking there is one finite score in [0, 1] per context.

    The policy is to reject, not to repair: a NaN or out-of-range score means the model is broken (diverged
    weights, a bad head, a wrong scale), and clipping or replacing it would hide that in the rewards.

    Example:
        >>> class Broken:
        ...     def score(self, contexts):
        ...         return [0.5, float("nan")]
        >>> checked_scores(Broken(), [Context(task="", action="look")] * 2)
        Traceback (most recent call last):
        ...
        ValueError: Broken.score returned nan for contexts[1]: scores must be finite numbers in [0, 1].

    Raises:
        ValueError: when the number of scores differs from the number of contexts, or a score is not a finite
            number in [0, 1]; the message names the model's class and the first offending index and value.
    """
    name = type(model).__name__
    scores = list(model.score(contexts))
    if len(scores) != len(contexts):
        raise ValueError(f"{name}.score returned {len(scores)} scores for {len(contexts)} contexts.")
    checked = []
    for i, score in enumerate(scores):
        try:
            value = float(score)
        except (TypeError, ValueError):
            value = math.nan
        if not 0.0 <= value <= 1.0:  # also false for NaN
            raise ValueError(
                f"{name}.score returned {score!r} for contexts[{i}]: scores must be finite numbers in [0, 1]."
            )
        checked.append(value)
    return checked
