"""Process reward models: the context they score, the prompt renderer, the scoring interface, the model.

:class:`ProcessRewardModel` and :class:`LoraSettings` need torch (the ``llm`` extra); they are imported on
first use, so the rest of the package works without it.
"""

from typing import TYPE_CHECKING, Any

from prm_gym.prm.base import RewardModel
from prm_gym.prm.context import Context
from prm_gym.prm.prompt import PromptConfig, format_action, render_messages, render_text
from prm_gym.prm.targets import (
    TargetRow,
    TargetsConfig,
    compute_targets,
    load_targets,
    normalised_q,
    preference_pairs,
    save_targets,
    step_return,
)

if TYPE_CHECKING:
    from prm_gym.prm.model import LoraSettings, ProcessRewardModel

__all__ = [
    "Context",
    "LoraSettings",
    "ProcessRewardModel",
    "PromptConfig",
    "RewardModel",
    "format_action",
    "render_messages",
    "render_text",
    "TargetRow",
    "TargetsConfig",
    "compute_targets",
    "load_targets",
    "normalised_q",
    "preference_pairs",
    "save_targets",
    "step_return",
]

_TORCH_EXPORTS = {"LoraSettings", "ProcessRewardModel"}


def __getattr__(name: str) -> Any:
    """Import the torch-backed exports on first use."""
    if name in _TORCH_EXPORTS:
        from prm_gym.prm import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
