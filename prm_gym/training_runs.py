"""Training runs that stop and resume: the run folder, its checkpoints and one ``Trainer`` behaviour.

Shared by PRM training (``prm-gym train-prm``) and policy fine-tuning (``prm-gym sft``).

A run folder (the run's ``output_dir``) holds ``config.json`` (:data:`RUN_CONFIG_FILE`: the run's settings and a
fingerprint of its data), ``checkpoint-<step>/`` folders written by ``transformers.Trainer``, and, once the run
has finished, ``model/`` with :data:`TRAINING_RECORD_FILE` (the record, final metrics, log history); ``model/``
appears complete or not at all. A rerun with the same settings continues from the last complete checkpoint
(:func:`checkpoint_to_resume`) or, when the model is there, returns at once (:func:`finished_run`); other
settings are refused, each difference named.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import Trainer
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import TrainerState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput, get_last_checkpoint
from transformers.utils import logging as hf_logging

from prm_gym.io import config_differences, read_json_object

__all__ = [
    "RUN_CONFIG_FILE",
    "TRAINING_RECORD_FILE",
    "ResumableTrainer",
    "checkpoint_step",
    "checkpoint_to_resume",
    "describe_metrics",
    "finished_run",
]

logger = logging.getLogger(__name__)

#: The file in a run's output_dir recording its settings, which a resumed run must match.
RUN_CONFIG_FILE = "config.json"
#: The file in the trained model's folder recording its run: settings, data, final metrics, log history.
TRAINING_RECORD_FILE = "training.json"


class ResumableTrainer(Trainer):
    """``transformers.Trainer`` that draws one progress bar and resumes a finished run without another step.

    Each checkpoint's ``save_pretrained`` would otherwise draw its own bar ("Writing model shards") under the
    training bar, and log messages would be written into it. Resuming from the checkpoint of a finished run
    loads it and trains no further (``Trainer.train`` would take one more step past ``max_steps``).
    """

    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
    ) -> TrainOutput:
        """``Trainer.train``, with transformers' other progress bars off meanwhile: one bar on the terminal."""
        if resume_from_checkpoint is True:  # the last one, as Trainer.train finds it (which fails without one)
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir) or True
        if isinstance(resume_from_checkpoint, str):
            state = TrainerState.load_from_json(str(Path(resume_from_checkpoint) / TRAINER_STATE_NAME))
            if 0 < state.max_steps <= state.global_step:
                self._load_from_checkpoint(resume_from_checkpoint)
                self.state = state
                loss = next((log["train_loss"] for log in reversed(state.log_history) if "train_loss" in log), None)
                return TrainOutput(state.global_step, float("nan") if loss is None else loss, {})
        enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            with logging_redirect_tqdm():  # warnings on their own line, above the bar
                return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval)
        finally:
            if enabled:
                hf_logging.enable_progress_bar()


def finished_run(output_dir: Path, record: Mapping[str, Any], *, ignored: Collection[str]) -> dict[str, Any] | None:
    """Return the training record of the run finished in ``output_dir`` if it had ``record``'s settings and data.

    None when there is no trained model there (the run has not finished: the model folder appears complete or
    not at all), or when it was trained otherwise (then the checkpoints decide: resumed, or refused).
    ``ignored`` names the settings a rerun may change (dotted for nested ones).
    """
    recorded_file = output_dir / "model" / TRAINING_RECORD_FILE
    if not recorded_file.is_file():
        return None
    recorded = read_json_object(recorded_file, "Use --no-resume to train it again, or choose another output_dir.")
    return None if config_differences(recorded, record, ignored=ignored) else recorded


def describe_metrics(metrics: Mapping[str, Any]) -> str:
    """Say a run's validation metrics in one line (an undefined one, like the AUC of one class, as "undefined").

    Example:
        >>> describe_metrics({"eval_loss": 0.6931, "eval_auc": None}), describe_metrics({})
        ('validation: eval_loss 0.6931, eval_auc undefined', 'no validation set')
    """
    if not metrics:
        return "no validation set"
    described = (f"{name} {'undefined' if value is None else format(value, '.4g')}" for name, value in metrics.items())
    return "validation: " + ", ".join(described)


def checkpoint_step(checkpoint: str) -> int:
    """Return the optimiser step of a ``checkpoint-<step>`` folder."""
    return int(Path(checkpoint).name.rpartition("-")[2])


def checkpoint_to_resume(
    output_dir: Path, record: Mapping[str, Any], *, resume: bool, ignored: Collection[str], run: str, command: str
) -> str | None:
    """Return the last complete checkpoint in ``output_dir`` to resume from, or None to start from scratch.

    A checkpoint is complete once ``Trainer`` wrote its ``trainer_state.json`` (its last file); newer incomplete
    ones (a run stopped while writing them) are deleted. Without ``resume``, every checkpoint is deleted.

    Args:
        output_dir: The run folder.
        record: The run's settings and data fingerprint (as :data:`RUN_CONFIG_FILE` records them).
        resume: Continue from the checkpoints (else delete them).
        ignored: Settings that may differ from the recorded ones.
        run: What the run is, for messages: ``"PRM training"``, ``"fine-tuning"``.
        command: The ``prm-gym`` command that makes such runs: ``"train-prm"``, ``"sft"``.

    Raises:
        ValueError: the checkpoints' run had other settings or data than ``record`` (named), or no recorded
            settings at all.
    """
    while (last := get_last_checkpoint(output_dir)) is not None:
        if not resume:
            logger.info("Starting over (--no-resume): deleting %s.", last)
        elif (Path(last) / TRAINER_STATE_NAME).is_file():
            break
        else:
            logger.warning("Deleting %s: incomplete (its run was stopped while writing it).", last)
        shutil.rmtree(last)
    if last is None:
        return None
    start_over = "or --no-resume to start over there (deleting its checkpoints), or choose another output_dir"
    recorded_file = output_dir / RUN_CONFIG_FILE
    if not recorded_file.is_file():
        raise ValueError(f"{output_dir} holds {PREFIX_CHECKPOINT_DIR} folders but no {RUN_CONFIG_FILE}: "
                         f"not a prm-gym {command} run to resume; {start_over}.")
    recorded = read_json_object(recorded_file, f"Use --no-resume to start over, {start_over[3:]}.")
    differences = config_differences(recorded, record, ignored=ignored)
    if differences:
        raise ValueError(f"Cannot resume the {run} in {output_dir}: it was run with other settings "
                         f"({'; '.join(differences)}). Run it with the same ones to resume, {start_over}.")
    return last
