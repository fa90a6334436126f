"""Agents by name: the one place that turns settings (a config, CLI flags) into an :class:`~prm_gym.agents.Agent`.

:class:`AgentConfig` holds everything that picks and builds an agent; evaluation and collection configs extend it,
so ``prm-gym eval`` and ``prm-gym collect`` take the same agent flags. :func:`make_agent` builds the agent a
config names: a reference agent, a language model (local, or behind an OpenAI-compatible server), or Best-of-N
over any of them with the Monte-Carlo estimator or a trained process reward model. Heavy dependencies (torch,
TextWorld's planner, the ``openai`` client) are imported only for the agent that needs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from prm_gym.agents.base import Agent
from prm_gym.agents.hf_config import HFAgentConfig
from prm_gym.agents.openai_agent import OpenAIAgentConfig

__all__ = ["AGENT_NAMES", "POLICY_NAMES", "AgentConfig", "make_agent"]

AgentName = Literal["expert", "walkthrough", "random", "hf", "openai", "best-of-n"]
PolicyName = Literal["random", "hf", "openai"]
#: The agents :func:`make_agent` builds.
AGENT_NAMES: tuple[str, ...] = get_args(AgentName)
#: The policies Best-of-N samples its candidates from.
POLICY_NAMES: tuple[str, ...] = get_args(PolicyName)


@dataclass
class AgentConfig:
    """Which agent to build, and its settings.

    Example:
        >>> make_agent(AgentConfig(agent="random"), seed=0).name
        'random'
        >>> make_agent(AgentConfig(agent="best-of-n", policy="random", n=4)).name
        'best-of-4(random, monte-carlo)'
    """

    #: The agent: "expert" plays the game's walkthrough and replans with a PDDL planner once off it (the
    #: ceiling), "walkthrough" only replays the gold commands, "random" picks admissible commands uniformly (the
    #: floor), "hf" is the causal LM `model` (settings in `hf`), "openai" a model behind an OpenAI-compatible
    #: server (settings in `openai`), "best-of-n" samples `n` actions from `policy` per turn and keeps the one
    #: `reward_model` scores best.
    agent: AgentName = "expert"
    #: Best-of-N: the policy that proposes the candidates ("hf": the causal LM `model`; "openai": the server's).
    policy: PolicyName = "random"
    #: The "hf" agent or policy: a causal LM's hub id, local directory or .gguf file.
    model: str | None = None
    #: The "hf" agent or policy: generate (ReAct answers) or loglik (most likely command), sampling, prompt.
    hf: HFAgentConfig = field(default_factory=HFAgentConfig)
    #: The "openai" agent or policy: the server, its model, sampling and retries.
    openai: OpenAIAgentConfig = field(default_factory=OpenAIAgentConfig)
    #: Best-of-N: "monte-carlo" (Q estimated by random rollouts from each candidate's next state), or a trained
    #: process reward model (a directory written by `save_pretrained`, or a .gguf file).
    reward_model: str = "monte-carlo"
    #: Best-of-N: candidates per turn.
    n: int = 8
    #: Best-of-N with "monte-carlo": rollouts per candidate.
    mc_rollouts: int = 8
    #: Where the LM agent and a trained reward model run: "auto" (cuda, then mps, then cpu), "cpu", "cuda", ...
    device: str = "auto"

    def __post_init__(self) -> None:
        """Check the names and counts, naming the bad value."""
        if self.agent not in AGENT_NAMES:
            raise ValueError(f"Unknown agent {self.agent!r}: choose one of {', '.join(AGENT_NAMES)}.")
        if self.policy not in POLICY_NAMES:
            raise ValueError(f"Unknown Best-of-N policy {self.policy!r}: choose one of {', '.join(POLICY_NAMES)}.")
        for name in ("n", "mc_rollouts"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` should be at least 1. Received {getattr(self, name)}.")


def make_agent(
    config: AgentConfig,
    *,
    seed: int | None = None,
    max_episode_steps: int = 30,
    env_kwargs: dict[str, Any] | None = None,
) -> Agent:
    """Build the agent ``config`` names.

    Args:
        config: The agent and its settings.
        seed: Seeds the random agent or policy, and the Monte-Carlo estimator's rollouts.
        max_episode_steps: The step cap of the games played (Monte-Carlo rollouts stop there too).
        env_kwargs: Options of the estimator's ALFWorld envs (``backend``, say).

    Raises:
        ValueError: an "hf" agent or policy without `model`.
        ImportError: the agent's extra is not installed (named in the message).
    """
    if config.agent != "best-of-n":
        return _single(config.agent, config, seed)
    from prm_gym.agents.best_of_n import BestOfNAgent
    from prm_gym.prm.base import RewardModel

    policy = _single(config.policy, config, seed)
    reward_model: RewardModel
    if config.reward_model == "monte-carlo":
        from prm_gym.rollout.monte_carlo import MonteCarloConfig, MonteCarloRewardModel

        mc = MonteCarloConfig(
            num_rollouts=config.mc_rollouts,
            max_episode_steps=max_episode_steps,
            seed=0 if seed is None else seed,
            env_kwargs=env_kwargs or {},
        )
        reward_model = MonteCarloRewardModel(mc)
    else:
        from prm_gym.prm.model import ProcessRewardModel  # torch: only when a trained model is asked for

        reward_model = ProcessRewardModel.from_pretrained(config.reward_model, device=config.device)
    agent = BestOfNAgent(policy, reward_model, n=config.n)
    model_name = config.reward_model if config.reward_model == "monte-carlo" else Path(config.reward_model).name
    agent.name = f"best-of-{config.n}({policy.name}, {model_name})"
    return agent


def _single(name: str, config: AgentConfig, seed: int | None) -> Agent:
    """Build one agent that is not Best-of-N: a reference agent or a language model."""
    if name == "random":
        from prm_gym.agents.random_agent import RandomAgent

        return RandomAgent(seed=seed)
    if name == "walkthrough":
        from prm_gym.agents.walkthrough_agent import WalkthroughAgent

        return WalkthroughAgent()
    if name == "expert":
        from prm_gym.agents.expert_agent import ExpertAgent  # TextWorld's planner: only for this agent

        return ExpertAgent()
    if name == "openai":
        from prm_gym.agents.openai_agent import OpenAICompatibleAgent

        return OpenAICompatibleAgent(config.openai)
    if config.model is None:
        raise ValueError("The 'hf' agent needs `model`: a causal LM's hub id, local directory or .gguf file.")
    from prm_gym.agents.hf_agent import HFAgent  # torch: only when a language model is asked for

    return HFAgent.from_pretrained(config.model, config.hf, device=config.device)
