"""Process reward models: the context they score, the prompt renderer, the scoring interface."""

from prm_gym.prm.base import RewardModel
from prm_gym.prm.context import Context
from prm_gym.prm.prompt import PromptConfig, format_action, render_messages, render_text

__all__ = ["Context", "PromptConfig", "RewardModel", "format_action", "render_messages", "render_text"]
