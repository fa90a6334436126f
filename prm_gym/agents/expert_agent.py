"""The expert: the game's walkthrough, and a PDDL planner from wherever the episode left it.

This is ALFWorld's "planner" expert (``AlfredExpert(expert_type="planner")``): TextWorld's PDDL env replans
with fast_downward from the current state. The expert plays the walkthrough while the episode follows it
(no planning needed), and only when an episode has left it (rollouts that start from random actions, the
paper's reset distribution, ...) does it replay the episode in a planning copy of the game and ask for a plan.
"""

from __future__ import annotations

from typing import Any

import textworld
from alfworld.agents.environment.alfred_tw_env import AlfredDemangler

from prm_gym.agents.base import Decision
from prm_gym.agents.walkthrough_agent import WalkthroughAgent
from prm_gym.prm.context import Context

__all__ = ["ExpertAgent"]


class ExpertAgent(WalkthroughAgent):
    """Walkthrough while on it, fast_downward's plan from the current state otherwise (ALFWorld games).

    Like :class:`~prm_gym.agents.walkthrough_agent.WalkthroughAgent`, it needs envs made with
    ``privileged=("walkthrough",)`` (its :attr:`privileged`).

    Example:
        >>> import gymnasium as gym, prm_gym
        >>> agent = ExpertAgent()
        >>> env = gym.make("prm_gym/ALFWorld-v0", split="tiny", privileged=agent.privileged)
        >>> obs, info = env.reset(seed=0)
        >>> agent.reset()
        >>> agent.act(obs, info) == info["walkthrough"][0]
        True

        Off the walkthrough (here a context that played "inventory" first), it replans:

        >>> from prm_gym.prm import Context
        >>> context = Context.from_reset(*env.reset(seed=0)).propose("inventory")
        >>> obs, *_, info = env.step("inventory")
        >>> agent.decide([context.advance(obs, info)])[0].action in info["admissible_commands"]
        True
    """

    name = "expert"

    def __init__(self) -> None:
        """Create the expert (it keeps one planning copy of the last game it planned in)."""
        super().__init__()
        self._planner: Any = None
        self._planner_game: str | None = None
        self._planner_actions: list[str] = []

    def off_walkthrough(self, context: Context) -> Decision:
        """Return the first command of a plan from the context's state (``look`` when no plan is found)."""
        plan = self._replan(context)
        return Decision(plan[0] if plan else "look")

    def _replan(self, context: Context) -> list[str]:
        """Bring the planning copy to the context's state (stepping on from where it is when it can) and plan."""
        assert context.game_file is not None  # noqa: S101 - _plan checked it
        actions = [action for _, action in context.history]
        continues = context.game_file == self._planner_game and actions[: len(self._planner_actions)] == (
            self._planner_actions
        )
        if not continues:
            self.close()
            infos = textworld.EnvInfos(policy_commands=False, admissible_commands=True)
            self._planner = textworld.start(context.game_file, infos, wrappers=[AlfredDemangler(shuffle=False)])
            self._planner.reset()
            self._planner_game, self._planner_actions = context.game_file, []
        # Plan only at the state asked about: replay with planning off, then one step (or a look) with it on.
        pending = actions[len(self._planner_actions) :]
        for action in pending[:-1]:
            self._planner.step(action)
        self._planner.request_infos.policy_commands = True
        try:
            state, _, _ = self._planner.step(pending[-1]) if pending else self._planner.step("look")
        finally:
            self._planner.request_infos.policy_commands = False
        self._planner_actions = actions
        return list(state.get("policy_commands") or [])

    def close(self) -> None:
        """Release the planning copy."""
        if self._planner is not None:
            self._planner.close()
        self._planner, self._planner_game, self._planner_actions = None, None, []
