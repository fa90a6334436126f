"""An agent that replays the game's gold walkthrough: the ceiling of an evaluation, and a check of the env."""

from __future__ import annotations

from typing import Any

__all__ = ["WalkthroughAgent"]


class WalkthroughAgent:
    """Replays ``info["walkthrough"]`` from the reset; once it runs out it says ``fallback``.

    Example:
        >>> agent = WalkthroughAgent()
        >>> agent.reset()
        >>> [agent.act("", {"walkthrough": ["go to desk 1", "use desklamp 1"]}), agent.act("", {})]
        ['go to desk 1', 'use desklamp 1']
        >>> agent.act("", {})
        'look'
    """

    name = "walkthrough"

    def __init__(self, fallback: str = "look") -> None:
        """Create the agent; ``fallback`` is the command sent after the walkthrough is used up."""
        self.fallback = fallback
        self._plan: list[str] = []

    def reset(self) -> None:
        """Drop the previous episode's plan; the next reset ``info`` brings a new one."""
        self._plan = []

    def act(self, observation: str, info: dict[str, Any]) -> str:
        """Return the next walkthrough command."""
        if "walkthrough" in info:
            self._plan = list(info["walkthrough"])
        return self._plan.pop(0) if self._plan else self.fallback
