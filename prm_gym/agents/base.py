"""The agent interface every policy in prm-gym implements.

An agent's core is :meth:`Agent.decide`: a batch of independent :class:`~prm_gym.prm.context.Context` objects
(one per env, each with its own history) in, one :class:`Decision` (action and, when the agent has one, its
reason) per context out. That is the batched form for vector envs and for Best-of-N. :meth:`Agent.act` is the
single-env form of the Gymnasium loop: it keeps the episode's context itself, from the reset's ``info`` on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prm_gym.prm.context import Context

__all__ = ["Agent", "Decision"]


@dataclass(frozen=True)
class Decision:
    """An agent's choice at one state: the command, the reason it gave and its log-likelihood (if known)."""

    action: str
    reason: str | None = None
    #: log p(decision | context) under the agent's policy, for agents that know it (LLMs, uniform random).
    logprob: float | None = None


class Agent(ABC):
    """A text-game policy.

    Example:
        >>> class First(Agent):
        ...     name = "first"
        ...     def decide(self, contexts):
        ...         return [Decision(c.admissible_commands[0]) for c in contexts]
        >>> agent = First()
        >>> agent.reset()
        >>> agent.act("You are in a room.", {"task": "look", "admissible_commands": ["look", "inventory"]})
        'look'
        >>> agent.act("You see nothing.", {"admissible_commands": ["inventory"]}), agent.context.history
        ('inventory', (('You are in a room.', 'look'),))
    """

    #: A short name for tables, logs and datasets.
    name: str = "agent"

    def __init__(self) -> None:
        """Start with no episode."""
        self._context: Context | None = None

    @abstractmethod
    def decide(self, contexts: Sequence[Context]) -> list[Decision]:
        """Return one decision per context, in order (the contexts are independent states)."""

    def sample(self, contexts: Sequence[Context], n: int) -> list[list[Decision]]:
        """Return ``n`` decisions per context (duplicates possible): :meth:`decide` on ``n`` copies of each.

        Stochastic agents give varied candidates this way; agents that can sample in one call (LLMs) override it.
        """
        repeated = [context for context in contexts for _ in range(n)]
        decisions = self.decide(repeated)
        return [decisions[i * n : (i + 1) * n] for i in range(len(contexts))]

    def reset(self, seed: int | None = None) -> None:
        """Forget the episode: the next :meth:`act` starts a new one; ``seed`` reseeds a stochastic agent."""
        self._context = None

    def act(self, observation: str, info: Mapping[str, Any]) -> str:
        """Return the next command, given what the env returned last (the reset's on an episode's first turn)."""
        if self._context is None:
            context = Context.from_reset(observation, info)
        else:
            context = self._context.advance(observation, info)
        (decision,) = self.decide([context])
        self._context = context.propose(decision.action, decision.reason)
        return decision.action

    @property
    def context(self) -> Context | None:
        """The context of the last :meth:`act`, with the decision proposed (its reason included)."""
        return self._context
