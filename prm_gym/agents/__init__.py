"""Reference agents for text games."""

from prm_gym.agents.base import Agent, Decision
from prm_gym.agents.best_of_n import BestOfNAgent
from prm_gym.agents.expert_agent import ExpertAgent
from prm_gym.agents.openai_agent import OpenAIAgentConfig, OpenAICompatibleAgent
from prm_gym.agents.random_agent import RandomAgent
from prm_gym.agents.walkthrough_agent import WalkthroughAgent

__all__ = [
    "Agent",
    "BestOfNAgent",
    "Decision",
    "ExpertAgent",
    "OpenAIAgentConfig",
    "OpenAICompatibleAgent",
    "RandomAgent",
    "WalkthroughAgent",
]
