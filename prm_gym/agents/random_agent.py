"""A uniformly random agent: the floor every other agent should beat."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from prm_gym.agents.base import Agent, Decision
from prm_gym.prm.context import Context

__all__ = ["RandomAgent"]


class RandomAgent(Agent):
    """Picks an admissible command uniformly at random, reproducibly under a seed.

    Example:
        >>> agent = RandomAgent(seed=0)
        >>> agent.act("", {"admissible_commands": ["look", "inventory", "go to desk 1"]})
        'go to desk 1'
    """

    name = "random"

    def __init__(self, seed: int | None = None) -> None:
        """Create the agent; ``seed`` fixes its choices."""
        super().__init__()
        self._rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        """Forget the episode; with ``seed``, restart the random stream from it (else it continues)."""
        super().reset(seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)

    def decide(self, contexts: Sequence[Context]) -> list[Decision]:
        """Return one of each context's admissible commands (the random stream continues across episodes)."""
        decisions = []
        for context in contexts:
            commands = context.admissible_commands
            if not commands:
                raise ValueError("RandomAgent needs `admissible_commands`; this context has none.")
            choice = commands[int(self._rng.integers(len(commands)))]
            decisions.append(Decision(choice, logprob=-math.log(len(commands))))
        return decisions
