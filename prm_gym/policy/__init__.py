"""Training policies: supervised fine-tuning on demonstrations (pi0) and DPO against a PRM (the AgentPRM loop).

:class:`SFTConfig` and :class:`DPOSettings` are light (the CLI lists them without torch); :func:`train_sft`,
:func:`sft_examples` and :func:`train_dpo` load torch, transformers and TRL, and are imported on first use
(PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from prm_gym.policy.dpo_config import DPOSettings
from prm_gym.policy.sft_config import SFTConfig

if TYPE_CHECKING:
    from prm_gym.policy.dpo import train_dpo
    from prm_gym.policy.sft import sft_examples, train_sft

__all__ = ["DPOSettings", "SFTConfig", "sft_examples", "train_dpo", "train_sft"]

_LAZY = {"sft_examples": "prm_gym.policy.sft", "train_sft": "prm_gym.policy.sft", "train_dpo": "prm_gym.policy.dpo"}


def __getattr__(name: str) -> Any:
    """Import the trainers on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
