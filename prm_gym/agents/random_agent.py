"""A uniformly random agent: the floor every other agent should beat."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["RandomAgent"]


class RandomAgent:
    """Picks an admissible command uniformly at random, reproducibly under a seed.

    Example:
        >>> agent = RandomAgent(seed=0)
        >>> agent.act("", {"admissible_commands": ["look", "inventory", "go to desk 1"]})
        'go to desk 1'
    """

    name = "random"

    def __init__(self, seed: int | None = None) -> None:
        """Create the agent; ``seed`` fixes its choices."""
        self._rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Nothing to forget: the random stream continues across episodes."""

    def act(self, observation: str, info: dict[str, Any]) -> str:
        """Return one of ``info["admissible_commands"]``."""
        commands = info.get("admissible_commands")
        if not commands:
            raise ValueError("RandomAgent needs `info['admissible_commands']`; this env did not provide any.")
        return str(commands[int(self._rng.integers(len(commands)))])
