"""The agent interface every policy in prm-gym implements."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["Agent"]


@runtime_checkable
class Agent(Protocol):
    """A text-game policy: it sees what the env returns and answers with a command.

    ``reset`` is called at the start of every episode; ``act`` receives the observation and ``info``
    the env returned last (the reset's ``info`` on the first turn, with ``walkthrough``).
    """

    #: A short name for tables and logs.
    name: str

    def reset(self) -> None:
        """Forget the previous episode."""

    def act(self, observation: str, info: dict[str, Any]) -> str:
        """Return the next command."""
