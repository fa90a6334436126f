"""The agent interface every policy in prm-gym implements.

An agent's core is :meth:`Agent.decide`: a batch of independent :class:`~prm_gym.prm.context.Context` objects
(one per env, each with its own history) in, one :class:`Decision` (action and, when the agent has one, its
reason) per context out. That is the batched form for vector envs and for Best-of-N. :meth:`Agent.act` is the
single-env form of the Gymnasium loop: it keeps the episode's context itself, from the reset's ``info`` on.
An agent that needs privileged ``info`` (an oracle that reads the walkthrough) names it in :attr:`Agent.privileged`;
whoever makes its envs asks for it: ``gym.make(env_id, privileged=agent.privileged)``, and hands each episode's
reset ``info`` to :meth:`Agent.start_episode`.
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
    #: The privileged ``info`` entries the agent needs (:data:`~prm_gym.envs.text_game_env.PRIVILEGED_INFO`): the
    #: envs it plays must be made with ``privileged=agent.privileged`` (evaluation and collection do so).
    privileged: tuple[str, ...] = ()

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
            self.start_episode(info)
            context = Context.from_reset(observation, info)
        else:
            context = self._context.advance(observation, info)
        (decision,) = self.decide([context])
        self._context = context.propose(decision.action, decision.reason)
        return decision.action

    def start_episode(self, info: Mapping[str, Any]) -> None:
        """Read an episode's reset ``info``: check that it has the privileged entries the agent needs.

        :meth:`act` calls it on an episode's first turn; whoever plays episodes through :meth:`decide` (the
        episode runner) calls it at each episode's reset, so that an agent can keep what it needs of ``info``.

        Raises:
            ValueError: naming the missing entries and how to make the env hand them out.
        """
        missing = [key for key in self.privileged if key not in info]
        if missing:
            raise ValueError(
                f"The {self.name!r} agent needs info{missing}, which the env hands out only when asked: make it with "
                f"privileged={self.privileged!r} (e.g. gym.make(env_id, privileged={self.privileged!r}))."
            )

    @property
    def context(self) -> Context | None:
        """The context of the last :meth:`act`, with the decision proposed (its reason included)."""
        return self._context
