"""The settings of reward-model training runs (``prm-gym train-prm``, ``prm-gym train-inverse-prm``); free of torch.

:class:`RewardTrainingSettings` is the one place the optimiser, validation and checkpoint settings of a reward
model's training are declared; :class:`PRMSettings` adds the AgentPRM losses, :class:`InversePRMSettings` the
InversePRM discount. The command-line configs (:class:`TrainPRMConfig`, :class:`TrainInversePRMConfig`) and the
``TrainingArguments`` subclasses (:mod:`prm_gym.prm.training`, :mod:`prm_gym.prm.inverse_training`) derive from
them, and a run hands them over field by field with :func:`shared_settings`, never by a copy spelled out by hand.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from prm_gym.training_schedule import TrainingSchedule

__all__ = [
    "InversePRMSettings",
    "PRMSettings",
    "RewardModelRun",
    "RewardTrainingSettings",
    "TrainInversePRMConfig",
    "TrainPRMConfig",
    "shared_settings",
]


@dataclass
class RewardTrainingSettings(TrainingSchedule):
    """How a reward model is trained: the validation split, and the optimiser steps and checkpoints.

    Names and meanings are ``TrainingArguments``' where it has them; the defaults suit small PRM runs.
    """

    #: Fraction of the games held out for validation (0 trains on everything).
    validation_fraction: float = 0.1
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 16


@dataclass
class PRMSettings(RewardTrainingSettings):
    """What an AgentPRM is trained on and how: the loss, and :class:`RewardTrainingSettings`."""

    #: "soft_bce" on Q^ (AgentPRM), or "bradley_terry" on preference pairs (the relative variant).
    loss: Literal["soft_bce", "bradley_terry"] = "soft_bce"
    #: Least Q^ difference between the two actions of a preference pair ("bradley_terry").
    preference_delta: float = 0.1
    #: "soft_bce": train on whole rollouts, one forward per episode with the head read at the end of every action
    #: (each (state, action) weighted 1/k by its k visits; :mod:`prm_gym.prm.episode_items`), instead of one
    #: forward per target row; needs the rollouts the targets came from. Validation stays per row.
    whole_episodes: bool = False


@dataclass
class InversePRMSettings(RewardTrainingSettings):
    """How an InversePRM is trained: the discount of its classifier's logit, and :class:`RewardTrainingSettings`."""

    #: gamma in the classifier's logit Q(s, a) - gamma * Q(s', a') (the paper's 0.95).
    gamma: float = 0.95
    #: Run transitions whose contexts start alike as one token trie of at most this many tokens: the renderer is
    #: append-only, so (s, a) is the start of (s', a') and one episode's transitions share its history; one
    #: forward then reads Q at the end of each context (:mod:`prm_gym.prm.inverse_training`). A batch then holds
    #: ``per_device_train_batch_size`` packs (1-2 of 2,048 tokens fit a 24 GB CPU machine). 0: one row per
    #: context (as models that cannot, encoders, always run).
    pack_tokens: int = 2048


def shared_settings(config: RewardTrainingSettings, settings: type[RewardTrainingSettings]) -> dict[str, Any]:
    """Return the fields of ``settings`` in ``config`` by name: what a ``TrainingArguments`` subclass takes.

    Example:
        >>> shared = shared_settings(TrainPRMConfig(max_steps=4), PRMSettings)
        >>> shared["max_steps"], shared["loss"], "targets" in shared
        (4, 'soft_bce', False)
    """
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(settings)}


@dataclass
class RewardModelRun:
    """Where a reward model's training starts and goes: the backbone, the folder, the prompt budget, the device."""

    #: The backbone: a Hugging Face model directory or hub id, or a .gguf file.
    model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    #: Checkpoints go here (checkpoint-<step>), with the run's config.json; the trained model to ``<output_dir>/model``.
    output_dir: str = "runs/prm"
    #: Token budget of a rendered context (older turns are dropped to fit).
    max_prompt_tokens: int = 1024
    #: Train LoRA adapters (and the head) instead of every weight; only they are saved (a few MB, loaded onto
    #: ``model``).
    lora: bool = False
    #: "auto" (cuda, then mps, then cpu), "cpu", "cuda", ...
    device: str = "auto"
    #: Continue from the last complete checkpoint in output_dir (its config must match); --no-resume starts over,
    #: deleting output_dir's checkpoints.
    resume: bool = True


@dataclass
class TrainPRMConfig(PRMSettings, RewardModelRun):
    """An AgentPRM training run from a targets folder to a saved model (``prm-gym train-prm``)."""

    #: The targets folder (``prm-gym targets``' output_dir).
    targets: str = "runs/targets"
    #: The rollouts folder the targets were computed from (``whole_episodes`` only).
    rollouts: str | None = None


@dataclass
class TrainInversePRMConfig(InversePRMSettings, RewardModelRun):
    """An InversePRM training run from a transitions folder to a saved model (``prm-gym train-inverse-prm``)."""

    #: The transitions folder (expert and policy transitions, :mod:`prm_gym.prm.inverse`).
    transitions: str = "runs/transitions"
    output_dir: str = "runs/inverse-prm"
