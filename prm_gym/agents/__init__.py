"""Reference agents for text games."""

from prm_gym.agents.base import Agent, Decision
from prm_gym.agents.best_of_n import BestOfNAgent
from prm_gym.agents.expert_agent import ExpertAgent
from prm_gym.agents.hf_config import HFAgentConfig
from prm_gym.agents.openai_agent import OpenAIAgentConfig, OpenAICompatibleAgent
from prm_gym.agents.random_agent import RandomAgent
from prm_gym.agents.walkthrough_agent import WalkthroughAgent

__all__ = [
    "Agent",
    "BestOfNAgent",
    "Decision",
    "ExpertAgent",
    "HFAgent",
    "HFAgentConfig",
    "OpenAIAgentConfig",
    "OpenAICompatibleAgent",
    "RandomAgent",
    "WalkthroughAgent",
]


def __getattr__(name: str) -> object:
    """Import :class:`HFAgent` on first use: it needs torch and transformers (the `llm` extra)."""
    if name == "HFAgent":
        from prm_gym.agents import hf_agent

        return hf_agent.HFAgent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
