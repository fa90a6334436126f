"""Reference agents for text games.

:class:`HFAgent` (torch and transformers, the ``llm`` extra) and :class:`ExpertAgent` (TextWorld's PDDL planner
and ALFWorld) are imported on first use (PEP 562), so that the other agents load neither.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from prm_gym.agents.base import Agent, Decision
from prm_gym.agents.best_of_n import BestOfNAgent
from prm_gym.agents.hf_config import HFAgentConfig
from prm_gym.agents.openai_agent import OpenAIAgentConfig, OpenAICompatibleAgent
from prm_gym.agents.random_agent import RandomAgent
from prm_gym.agents.walkthrough_agent import WalkthroughAgent

if TYPE_CHECKING:
    from prm_gym.agents.expert_agent import ExpertAgent
    from prm_gym.agents.hf_agent import HFAgent

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

#: The agents imported on first use, and their modules.
_HEAVY = {"ExpertAgent": "prm_gym.agents.expert_agent", "HFAgent": "prm_gym.agents.hf_agent"}


def __getattr__(name: str) -> Any:
    """Import :class:`ExpertAgent` or :class:`HFAgent` on first use."""
    if name in _HEAVY:
        return getattr(importlib.import_module(_HEAVY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
