"""Gymnasium wrappers: process rewards from reward models, and adapters for array-based RL libraries (SB3).

- :class:`ProcessRewardWrapper`, :class:`VectorProcessRewardWrapper`: rewards from a reward model.
- :class:`DiscreteCommands`: ``Discrete`` actions over the admissible commands, with action masks.
- :class:`TextFeatures`: observations as fixed-size vectors (:class:`HashingFeaturizer`, or
  :class:`TransformerEmbeddings`, which needs torch and is imported on first use).
- :func:`adapt_for_sb3`: all of the above, stacked in the order that works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prm_gym.wrappers.adapters import SB3_GAMMA, adapt_for_sb3
from prm_gym.wrappers.commands import DEFAULT_MAX_ACTIONS, DiscreteCommands
from prm_gym.wrappers.process_reward import ProcessRewardConfig, ProcessRewardWrapper, VectorProcessRewardWrapper
from prm_gym.wrappers.text_features import HashingFeaturizer, TextFeatures, TextFeaturizer

if TYPE_CHECKING:
    from prm_gym.wrappers.embeddings import TransformerEmbeddings

__all__ = [
    "DEFAULT_MAX_ACTIONS",
    "SB3_GAMMA",
    "DiscreteCommands",
    "HashingFeaturizer",
    "ProcessRewardConfig",
    "ProcessRewardWrapper",
    "TextFeatures",
    "TextFeaturizer",
    "TransformerEmbeddings",
    "VectorProcessRewardWrapper",
    "adapt_for_sb3",
]


def __getattr__(name: str) -> Any:
    """Import :class:`TransformerEmbeddings` (torch, transformers) on first use."""
    if name == "TransformerEmbeddings":
        from prm_gym.wrappers.embeddings import TransformerEmbeddings

        return TransformerEmbeddings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
