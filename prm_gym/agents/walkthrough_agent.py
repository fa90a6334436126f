"""An agent that replays the game's gold walkthrough: the ceiling of an evaluation, and a check of the env."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence

from prm_gym.agents.base import Agent, Decision
from prm_gym.prm.context import Context

__all__ = ["WalkthroughAgent", "walkthrough_of"]


@functools.lru_cache(maxsize=4096)
def walkthrough_of(game_file: str) -> tuple[str, ...]:
    """Return a game's gold walkthrough (empty when it has none).

    ALFWorld's ``.tw-pddl`` files hold it in their JSON; other TextWorld games are asked through the engine.
    """
    if game_file.endswith(".tw-pddl"):
        with open(game_file, encoding="utf-8") as f:
            return tuple(json.load(f).get("walkthrough") or ())
    from prm_gym.envs.engine import TextWorldEngine

    engine = TextWorldEngine()
    try:
        engine.load(game_file)
        engine.reset()
        return tuple(engine.walkthrough or ())
    finally:
        engine.close()


class WalkthroughAgent(Agent):
    """Plays the game's walkthrough while the episode follows it; ``fallback`` once it does not.

    Contexts must carry their ``game_file`` (those built from an env's ``info`` do).

    Example:
        >>> import gymnasium as gym, prm_gym
        >>> env, agent = gym.make("prm_gym/ALFWorld-v0", split="tiny"), WalkthroughAgent()
        >>> obs, info = env.reset(seed=0)
        >>> agent.reset()
        >>> agent.act(obs, info) == info["walkthrough"][0]
        True
    """

    name = "walkthrough"

    def __init__(self, fallback: str = "look") -> None:
        """Create the agent; ``fallback`` is sent once the walkthrough is used up or was left."""
        super().__init__()
        self.fallback = fallback

    def decide(self, contexts: Sequence[Context]) -> list[Decision]:
        """Return the walkthrough's next command where each episode is still on it, else :meth:`off_walkthrough`."""
        decisions = []
        for context in contexts:
            plan = self._plan(context)
            taken = [action for _, action in context.history]
            on_plan = len(taken) < len(plan) and list(plan[: len(taken)]) == taken
            decisions.append(Decision(plan[len(taken)]) if on_plan else self.off_walkthrough(context))
        return decisions

    def off_walkthrough(self, context: Context) -> Decision:
        """Return the decision where the episode left the walkthrough (or used it up): ``fallback``."""
        return Decision(self.fallback)

    @staticmethod
    def _plan(context: Context) -> tuple[str, ...]:
        if not context.game_file:
            raise ValueError("A walkthrough agent needs the context's `game_file` to find the game's walkthrough.")
        return walkthrough_of(context.game_file)
