"""Best-of-N: sample N candidate actions from a policy, keep the one a reward model scores highest."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from prm_gym.agents.base import Agent, Decision
from prm_gym.prm.base import RewardModel, checked_scores
from prm_gym.prm.context import Context

__all__ = ["BestOfNAgent"]

logger = logging.getLogger(__name__)


class BestOfNAgent(Agent):
    """The paper's inference-time use of a PRM: per turn, ``n`` samples, one batched ``score``, the best kept.

    Candidates are deduplicated by action (the first sample of an action keeps its reason); ties in score go to
    the candidate the policy found more likely, then to the earlier one. A turn whose samples all agree is not
    scored (nothing to choose: with ``n=1``, or a confident policy, the reward model is never called).
    ``score_spreads`` records, per turn, the best minus the worst candidate score (0 when all candidates agree).

    Example:
        >>> from prm_gym.agents import RandomAgent
        >>> class PrefersLook:
        ...     def score(self, contexts):
        ...         return [1.0 if c.action == "look" else 0.0 for c in contexts]
        >>> agent = BestOfNAgent(RandomAgent(seed=0), PrefersLook(), n=8)
        >>> agent.act("", {"admissible_commands": ["look", "inventory", "go to desk 1"]})
        'look'
    """

    def __init__(self, policy: Agent, reward_model: RewardModel, n: int = 16) -> None:
        """Wrap ``policy``; ``n`` candidates per turn are scored by ``reward_model``."""
        super().__init__()
        if n < 1:
            raise ValueError(f"`n` should be at least 1. Received {n}.")
        if not callable(getattr(reward_model, "score", None)):
            raise TypeError(f"`reward_model` must have a `score(contexts)` method; got {type(reward_model).__name__}.")
        self.policy, self.reward_model, self.n = policy, reward_model, n
        self.name = f"best-of-{n}({policy.name})"
        self.privileged = policy.privileged  # its envs must hand out what the policy reads
        #: Best minus worst candidate score, one entry per decided context.
        self.score_spreads: list[float] = []

    def reset(self, seed: int | None = None) -> None:
        """Forget the episode and reset the policy (with ``seed``)."""
        super().reset(seed)
        self.policy.reset(seed)

    def start_episode(self, info: Mapping[str, Any]) -> None:
        """Hand the episode's reset ``info`` to the policy (and check what it needs of it)."""
        super().start_episode(info)
        self.policy.start_episode(info)

    def decide(self, contexts: Sequence[Context]) -> list[Decision]:
        """Return, for each context, the highest-scoring of the policy's deduplicated samples."""
        candidates = []
        for samples in self.policy.sample(contexts, self.n):
            unique: dict[str, Decision] = {}
            for decision in samples:
                unique.setdefault(decision.action, decision)
            candidates.append(list(unique.values()))
        # A context whose samples all agree has nothing to choose: only contexts with 2+ candidates are scored.
        choices = [(context, group) for context, group in zip(contexts, candidates, strict=True) if len(group) > 1]
        proposals = [context.propose(d.action, d.reason) for context, group in choices for d in group]
        scores = checked_scores(self.reward_model, proposals) if proposals else []
        decisions, offset = [], 0
        for group in candidates:
            if len(group) == 1:
                self.score_spreads.append(0.0)
                decisions.append(group[0])
                continue
            group_scores = scores[offset : offset + len(group)]
            offset += len(group)
            best = max(
                range(len(group)),
                key=lambda i: (group_scores[i], -math.inf if group[i].logprob is None else group[i].logprob, -i),
            )
            self.score_spreads.append(max(group_scores) - min(group_scores))
            logger.debug("best-of-%d: %d candidates, scores %s", self.n, len(group), group_scores)
            decisions.append(group[best])
        return decisions
