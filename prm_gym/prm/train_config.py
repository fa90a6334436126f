"""The settings of a PRM training run (``prm-gym train-prm``); kept free of torch so the CLI lists them anyway."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["TrainPRMConfig"]


@dataclass
class TrainPRMConfig:
    """A PRM training run from a targets folder to a saved model (``prm-gym train-prm``)."""

    #: The targets folder (``prm-gym targets``' output_dir).
    targets: str = "runs/targets"
    #: The backbone: a Hugging Face model directory or hub id, or a .gguf file.
    model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    #: Checkpoints go here; the trained model to ``<output_dir>/model``.
    output_dir: str = "runs/prm"
    #: "soft_bce" on Q^ (AgentPRM), or "bradley_terry" on preference pairs.
    loss: Literal["soft_bce", "bradley_terry"] = "soft_bce"
    #: Least Q^ difference of a preference pair ("bradley_terry").
    preference_delta: float = 0.1
    #: Fraction of the games held out for validation.
    validation_fraction: float = 0.1
    learning_rate: float = 1e-5
    num_train_epochs: float = 1.0
    #: Stop after this many optimiser steps (-1: run the epochs).
    max_steps: int = -1
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    #: Token budget of a rendered context (older turns are dropped to fit).
    max_prompt_tokens: int = 1024
    #: Train LoRA adapters (and the head) instead of every weight.
    lora: bool = False
    #: "auto" (cuda, then mps, then cpu), "cpu", "cuda", ...
    device: str = "auto"
    seed: int = 0
