"""An agent that replays the game's gold walkthrough: the ceiling of an evaluation, and a check of the env."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

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

    The walkthrough is privileged: the env must hand it out (``privileged=("walkthrough",)``, see
    :attr:`~prm_gym.agents.base.Agent.privileged`), and :meth:`start_episode` raises on a reset ``info`` without
    it. In the Gymnasium loop (:meth:`act`) and in the episode runner (evaluation, collection), which hand each
    reset's ``info`` to :meth:`start_episode`, the agent plays the ``info``'s walkthrough. Contexts must carry their
    ``game_file`` (those built from an env's ``info`` do): a game the agent got no ``info`` of has its walkthrough
    read from the game (:func:`walkthrough_of`), as when :meth:`decide` is given contexts alone (Monte-Carlo
    rollouts).

    Example:
        >>> import gymnasium as gym, prm_gym
        >>> agent = WalkthroughAgent()
        >>> env = gym.make("prm_gym/ALFWorld-v0", split="tiny", privileged=agent.privileged)
        >>> obs, info = env.reset(seed=0)
        >>> agent.reset()
        >>> agent.act(obs, info) == info["walkthrough"][0]
        True
    """

    name = "walkthrough"
    privileged = ("walkthrough",)

    def __init__(self, fallback: str = "look") -> None:
        """Create the agent; ``fallback`` is sent once the walkthrough is used up or was left."""
        super().__init__()
        self.fallback = fallback
        #: Walkthroughs the env handed out, by game file.
        self._walkthroughs: dict[str, tuple[str, ...]] = {}

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

    def start_episode(self, info: Mapping[str, Any]) -> None:
        """Check the reset's ``info`` (see :class:`~prm_gym.agents.base.Agent`) and keep its walkthrough."""
        super().start_episode(info)
        if info.get("game_file"):
            self._walkthroughs[str(info["game_file"])] = tuple(info["walkthrough"])

    def _plan(self, context: Context) -> tuple[str, ...]:
        """Return the walkthrough of the context's game: the one its env handed out, else the game file's."""
        if not context.game_file:
            raise ValueError("A walkthrough agent needs the context's `game_file` to find the game's walkthrough.")
        known = self._walkthroughs.get(context.game_file)
        return known if known is not None else walkthrough_of(context.game_file)
