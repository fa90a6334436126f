"""Training policies: supervised fine-tuning of a causal LM on demonstrations (pi0 of the AgentPRM loop).

:class:`SFTConfig` is light (the CLI lists it without torch); :func:`train_sft` and :func:`sft_examples` load
torch and transformers, and are imported on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from prm_gym.policy.sft_config import SFTConfig

if TYPE_CHECKING:
    from prm_gym.policy.sft import sft_examples, train_sft

__all__ = ["SFTConfig", "sft_examples", "train_sft"]


def __getattr__(name: str) -> Any:
    """Import the trainer on first use."""
    if name in {"sft_examples", "train_sft"}:
        return getattr(importlib.import_module("prm_gym.policy.sft"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
