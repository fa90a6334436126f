"""The optimiser steps and checkpoints every training run takes (``prm-gym sft``, DPO, ``train-prm``, ...).

Names and meanings are ``transformers.TrainingArguments``' (each run passes them on); each run's config derives
from :class:`TrainingSchedule` and overrides the defaults that suit it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EXECUTING", "TrainingSchedule"]

#: The settings of how a run executes, not of what it learns: a finished run, a checkpoint or a loop resumes with
#: them changed (each run's record names them among the settings it does not compare). Checkpointing and logging
#: more or less often changes no weight: a long stage can be given checkpoints after it started.
EXECUTING = ("activation_checkpointing", "logging_steps", "save_steps", "save_total_limit")


@dataclass
class TrainingSchedule:
    """How long a run trains, in what steps, and when it logs and checkpoints (``TrainingArguments``' fields).

    Example:
        >>> TrainingSchedule(max_steps=300).save_steps
        100
    """

    learning_rate: float = 1e-5
    num_train_epochs: float = 1.0
    #: Stop after this many optimiser steps (-1: run the epochs).
    max_steps: int = -1
    #: Examples per optimiser step and device.
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    #: Log the training loss every this many optimiser steps (below 1: that fraction of the run's steps).
    logging_steps: float = 10
    #: Write a checkpoint (weights, optimiser, scheduler, random states) every this many optimiser steps (below 1:
    #: that fraction of the run's steps), and at the end; an interrupted run resumes from the last one.
    save_steps: float = 100
    #: Keep at most this many checkpoints (the older ones are deleted once a newer one is complete).
    save_total_limit: int | None = 1
    seed: int = 0
    #: Recompute each layer's activations in the backward instead of keeping them (``torch.utils.checkpoint``):
    #: the same update, less memory for more time. One step of SmolLM2-135M with LoRA on 2 x 2,851 tokens holds
    #: 8-11.5 GiB without it and 2.6-3.5 GiB with it, for 20-40% more time (benchmarks/RESULTS.md). A setting of how
    #: the run executes, not of what it learns: a run may resume with it switched.
    activation_checkpointing: bool = False
