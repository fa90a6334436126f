"""Training a process reward model on Monte-Carlo targets: a config and a ``transformers.Trainer``.

The AgentPRM recipe: each (state, action) has a target Q^ in [0, 1] (:mod:`prm_gym.prm.targets`); the PRM's
logit is trained with soft binary cross-entropy against it. The relative variant trains on pairs of actions at
one state whose Q^ differ by at least ``preference_delta`` with the Bradley-Terry loss
``-log sigmoid(logit_chosen - logit_rejected)``. Rows are split into training and validation **by game**
(never by row: the states of one game are too alike), and evaluation reports the loss, accuracy at 0.5, the
AUC of predicting which actions lead to success, and the calibration error. An action "leads to success" when
most of the rollouts through it were won (:attr:`TargetRow.success`, ``wins / visits > 0.5``), a label counted
from the rollouts rather than read off Q^, which mixes the outcomes with how far they were.

Inputs go through :meth:`ProcessRewardModel.encode` and :meth:`ProcessRewardModel.logits`, the same path as
scoring. The same code trains the shared SmolLM2-135M on a CPU (bf16 autocast where native) and a 3B model on a GPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import EvalPrediction, TrainingArguments
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import IntervalStrategy

from prm_gym.devices import bf16_is_native, resolve_device
from prm_gym.io import atomic_directory, atomic_write_text, lock_folder
from prm_gym.prm import shared_prefix as sharing
from prm_gym.prm.episode_items import EpisodeItem, episode_items
from prm_gym.prm.model import LoraSettings, ProcessRewardModel, head_logits, position_logits
from prm_gym.prm.prompt import PromptConfig
from prm_gym.prm.targets import (
    TARGETS_FILE,
    EpisodeRecord,
    TargetRow,
    TargetsConfig,
    load_targets,
    load_targets_config,
    preference_pairs,
)
from prm_gym.prm.train_config import PRMSettings, RewardModelRun, TrainPRMConfig, shared_settings
from prm_gym.training_runs import (
    RUN_CONFIG_FILE,
    TRAINING_RECORD_FILE,
    ResumableTrainer,
    checkpoint_step,
    checkpoint_to_resume,
    describe_metrics,
    finished_run,
)
from prm_gym.training_schedule import EXECUTING

__all__ = [
    "PRMConfig",
    "PRMSettings",
    "PRMTrainer",
    "RewardModelTrainer",
    "TrainPRMConfig",
    "auc",
    "calibration_error",
    "fit_reward_model",
    "prm_metrics",
    "score_metrics",
    "split_by_game",
    "train_prm",
]

logger = logging.getLogger(__name__)

#: The label of a padded position in a batch of whole episodes: transformers' padding index in evaluation (it pads
#: predictions and labels of unequal batches with it), never a Q^ (those lie in [0, 1]).
PAD_LABEL = -100.0


@dataclass
class PRMConfig(PRMSettings, TrainingArguments):  # type: ignore[misc]  # activation_checkpointing: bool | None there
    """``TrainingArguments`` with the PRM's own settings and defaults (:class:`PRMSettings`, shared with the CLI).

    Checkpoints are written every ``save_steps`` optimiser steps and at the end (``save_strategy="steps"``), and
    evaluation runs at the end of each epoch and of training when games are held out for validation.

    Example:
        >>> config = PRMConfig(output_dir="/tmp/prm", loss="soft_bce", validation_fraction=0.2)
        >>> config.remove_unused_columns, config.label_names, config.save_steps
        (False, ['labels', 'success'], 100)
    """

    #: Evaluate at the end of each epoch (and at the end of training) when games are held out.
    eval_strategy: IntervalStrategy | str = "epoch"
    report_to: str | list[str] | None = "none"
    remove_unused_columns: bool = False
    label_names: list[str] | None = field(default_factory=lambda: ["labels", "success"])

    def __post_init__(self) -> None:
        """Check the PRM settings, then let ``TrainingArguments`` check its own."""
        if self.loss not in ("soft_bce", "bradley_terry"):
            raise ValueError(f"`loss` should be 'soft_bce' or 'bradley_terry'. Received {self.loss!r}.")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"`validation_fraction` should be in [0, 1). Received {self.validation_fraction}.")
        if self.validation_fraction == 0:
            self.eval_strategy = "no"  # nothing to evaluate
        super().__post_init__()


class _PlayedInAGame(Protocol):
    @property
    def game_file(self) -> str | None: ...


_Row = TypeVar("_Row", bound=_PlayedInAGame)


def split_by_game(rows: Sequence[_Row], validation_fraction: float, seed: int = 0) -> tuple[list[_Row], list[_Row]]:
    """Split rows (targets, transitions) into (train, validation) by their game: no game has rows on both sides.

    Example:
        >>> from prm_gym.prm.context import Context
        >>> rows = [TargetRow(Context("t", observation="o", action="a", game_file=f"g{i % 5}"), 0.5, 1)
        ...         for i in range(20)]
        >>> train, valid = split_by_game(rows, 0.2)
        >>> len(train), len(valid), {r.game_file for r in train} & {r.game_file for r in valid}
        (16, 4, set())
    """
    games = sorted({row.game_file or "" for row in rows})
    random.Random(seed).shuffle(games)
    held_out = set(games[: round(len(games) * validation_fraction)]) if validation_fraction > 0 else set()
    if validation_fraction > 0 and not held_out and len(games) > 1:
        held_out = {games[0]}
    train = [row for row in rows if (row.game_file or "") not in held_out]
    valid = [row for row in rows if (row.game_file or "") in held_out]
    return train, valid


class _Collator:
    """Turns dataset items into a model batch through the PRM's own encoder (one tokenisation path)."""

    def __init__(self, prm: ProcessRewardModel) -> None:
        self.prm = prm

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if "episode" in items[0]:  # whole episodes: the head read at every listed position
            episodes: list[EpisodeItem] = [item["episode"] for item in items]
            batch = self.prm.tokenizer.pad({"input_ids": [e.token_ids for e in episodes]}, padding_side="right",
                                           return_tensors="pt")  # fmt: skip
            return {
                "input_ids": batch["input_ids"],
                "attention_mask": batch["attention_mask"],
                "rows": torch.tensor([i for i, e in enumerate(episodes) for _ in e.positions]),
                "positions": torch.tensor([p for e in episodes for p in e.positions]),
                # One row per episode, padded (see padded_rows); the Trainer pads its batches as these are.
                "labels": padded_rows([e.q for e in episodes], PAD_LABEL),
                "success": padded_rows([e.success for e in episodes], PAD_LABEL),
                "weights": padded_rows([e.weights for e in episodes], 0.0),
            }
        if "rejected" in items[0]:  # a preference pair: the chosen contexts first, then the rejected ones
            contexts = [item["chosen"] for item in items] + [item["rejected"] for item in items]
            labels = torch.ones(len(items))
            success = torch.ones(len(items))
        else:
            contexts = [item["context"] for item in items]
            labels = torch.tensor([item["q"] for item in items], dtype=torch.float32)
            success = torch.tensor([item["success"] for item in items], dtype=torch.float32)
        batch = self.prm.encode(contexts)
        return {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "labels": labels,
            "success": success,
        }


def padded_rows(values: Sequence[Sequence[float]], pad: float) -> torch.Tensor:
    """Return one row per item (an episode, a pack) of its per-position ``values``, padded with ``pad``.

    Batches carry their labels this way so that the Trainer's evaluation keeps one row per item (flat
    per-position labels would be cut to the item count); :func:`as_padded` lays the outputs out alike.
    """
    table = torch.full((len(values), max(map(len, values))), pad, dtype=torch.float32)
    for row, item_values in enumerate(values):
        table[row, : len(item_values)] = torch.tensor(item_values, dtype=torch.float32)
    return table


def as_padded(labels: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Return ``values`` laid out as the :func:`padded_rows` ``labels`` are, ``PAD_LABEL`` in the padding.

    ``values`` has one entry per real entry of ``labels``, row by row; the result is detached (an evaluation
    output).
    """
    listed = (labels != PAD_LABEL).to(values.device)
    return torch.full(labels.shape, PAD_LABEL, device=values.device).masked_scatter(listed, values.detach())


class _ProgressBar(ProgressCallback):
    """Transformers' training progress bar, with the evaluations during training shown on its line.

    ``ProgressCallback`` opens a second bar under the training bar for each evaluation; the two redraw over each
    other in many terminals. Here the training bar says how far the validation scoring is instead; an evaluation
    outside training keeps its own bar.
    """

    def __init__(self) -> None:
        super().__init__()
        self._scored = 0  # validation batches scored in the running evaluation

    def on_prediction_step(
        self, args: Any, state: Any, control: Any, eval_dataloader: Any = None, **kwargs: Any
    ) -> None:
        if self.training_bar is None:
            super().on_prediction_step(args, state, control, eval_dataloader=eval_dataloader, **kwargs)
        elif state.is_world_process_zero:
            self._scored += 1
            total = len(eval_dataloader) if eval_dataloader is not None else "?"
            self.training_bar.set_postfix_str(f"validation {self._scored}/{total}")

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        super().on_evaluate(args, state, control, **kwargs)
        self._scored = 0
        if self.training_bar is not None:
            self.training_bar.set_postfix_str("")


class RewardModelTrainer(ResumableTrainer):
    """What the reward models' trainers share: a per-batch mean loss, the progress bar, the final metrics.

    :class:`PRMTrainer` (AgentPRM) and :class:`~prm_gym.prm.inverse_training.InversePRMTrainer` derive from it.
    """

    #: :meth:`compute_loss` returns a mean over its own batch, so ``Trainer.training_step`` must divide it by the
    #: gradient accumulation steps. Left to its default (None), ``Trainer`` decides that the loss is already
    #: scaled whenever the model's ``forward`` takes ``**kwargs`` and the batch has ``labels`` (true of every
    #: sequence-classification model here), and each accumulated update would be that many times too large.
    #: (The alternative, dividing a sum by ``num_items_in_batch``, would also have to redo ``Trainer``'s
    #: multi-device scaling; a per-batch mean divided by the steps is exact for equal batches.)
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        prm: ProcessRewardModel,
        args: TrainingArguments,
        train_dataset: Sequence[Any],
        eval_dataset: Sequence[Any],
        *,
        no_validation: str,
        **kwargs: Any,
    ) -> None:
        """Set up ``transformers.Trainer`` on ``prm.model``, the training bar showing the validation's progress.

        Without validation items, evaluation is switched off and ``no_validation`` (why there are none, and what
        would give some) is logged as a warning.
        """
        self.prm = prm
        if not eval_dataset and args.eval_strategy != "no":
            logger.warning(no_validation)
            args.eval_strategy = IntervalStrategy.NO
        super().__init__(
            model=prm.model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset or None, **kwargs
        )
        if self.pop_callback(ProgressCallback) is not None:
            self.add_callback(_ProgressBar)

    def final_metrics(self) -> dict[str, Any]:
        """Return the trained model's validation metrics (``eval_*``), scoring the validation set at most once.

        The training loop's own evaluation at its last step (the end of an epoch, or of ``eval_strategy="steps"``)
        already scored the final weights: its metrics are returned. Otherwise (``eval_strategy="no"``), the
        validation set is scored now. Empty without a validation set.
        """
        if self.eval_dataset is None:
            return {}
        for log in reversed(self.state.log_history):
            if log.get("step") == self.state.global_step and "eval_loss" in log:
                return {name: value for name, value in log.items() if name.startswith("eval_")}
        with logging_redirect_tqdm():  # warnings above the evaluation's bar, not glued onto it
            return self.evaluate()


class PRMTrainer(RewardModelTrainer):
    """Trains a :class:`ProcessRewardModel` on Monte-Carlo target rows (``soft_bce``) or pairs (``bradley_terry``).

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification, BertTokenizer
        >>> from prm_gym.prm.context import Context
        >>> words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *"you are in a room go to sink 1 look".split()]
        >>> tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(words)})
        >>> bert = BertForSequenceClassification(BertConfig(vocab_size=len(words), hidden_size=16,
        ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=1))
        >>> prm = ProcessRewardModel(bert, tokenizer)
        >>> room = [Context("look", observation="You are in a room.", game_file=f"g{i}") for i in range(8)]
        >>> rows = [TargetRow(room[i].propose(a), q, visits=4, wins=wins)
        ...         for i, (a, q, wins) in enumerate([("look", 1.0, 4), ("go to sink 1", 0.0, 0)] * 4)]
        >>> trainer = PRMTrainer(prm, PRMConfig(output_dir="/tmp/prm-doc", max_steps=2, validation_fraction=0.25,
        ...                                     use_cpu=True, save_strategy="no"), rows)
        >>> trainer.train().global_step  # doctest: +ELLIPSIS
        {...}
        2
    """

    def __init__(
        self,
        prm: ProcessRewardModel,
        args: PRMConfig,
        rows: Sequence[TargetRow],
        episodes: Sequence[EpisodeRecord] = (),
        targets: TargetsConfig | None = None,
        **kwargs: Any,
    ) -> None:
        """Split ``rows`` by game into training and validation sets and set up the trainer on ``prm.model``.

        With ``args.whole_episodes``, the training set is ``episodes`` (the rollouts the rows were computed from
        with ``targets``' settings), one item per episode of the training games, and the validation set one per
        episode of the held-out games, each row read once (the same rows and metrics as per row, ~10x fewer
        tokens).

        Raises:
            ValueError: when there are no rows, the Bradley-Terry loss finds no preference pair, or whole
                episodes are asked without episodes, with another loss, or of a model that cannot read its head at
                many positions of one forward.
        """
        if not rows:
            raise ValueError("No target rows to train on: compute targets from rollouts first (prm-gym targets).")
        train_rows, valid_rows = split_by_game(rows, args.validation_fraction, args.seed)
        train_set, valid_set = _items(train_rows, args), _items(valid_rows, args)
        if args.whole_episodes:
            train_set = _episode_items(prm, args, train_rows, episodes, targets)
            valid_set = _episode_items(prm, args, valid_rows, episodes, targets, once=True) if valid_rows else []
        if not train_set:
            raise ValueError(
                f"No training items: the {args.loss} loss found none in {len(train_rows)} rows "
                f"(preference_delta={args.preference_delta})."
            )
        super().__init__(
            prm,
            args,
            train_set,
            valid_set,
            no_validation=f"No validation items ({len(valid_rows)} held-out rows from "
            f"{len({row.game_file for row in rows})} games): training without evaluation. Targets from more games, "
            "or a larger validation_fraction, give a validation set.",
            data_collator=_Collator(prm),
            compute_metrics=prm_metrics if args.loss == "soft_bce" else _pair_metrics,
            **kwargs,
        )

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Soft BCE of the logits against Q^, or the Bradley-Terry loss of chosen over rejected logits.

        Whole episodes: the head read at each listed position, each term weighted (``1/k`` for k visits).
        """
        labels = inputs.pop("labels")
        inputs.pop("success")
        if "positions" in inputs:
            logits = position_logits(model, inputs, inputs.pop("rows"), inputs.pop("positions"))
            listed = labels != PAD_LABEL  # the padded rows' real entries, in the order of the positions
            weights = inputs.pop("weights")[listed].to(logits.device)
            terms = F.binary_cross_entropy_with_logits(logits, labels[listed].to(logits.device), reduction="none")
            loss = (weights * terms).sum() / weights.sum()
            return (loss, {"logits": as_padded(labels, logits)}) if return_outputs else loss
        logits = head_logits(model, inputs)
        if self.args.loss == "soft_bce":  # type: ignore[attr-defined]
            loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.device))
            outputs = {"logits": logits}
        else:
            chosen, rejected = logits.chunk(2)
            loss = -F.logsigmoid(chosen - rejected).mean()
            outputs = {"logits": chosen - rejected}
        return (loss, outputs) if return_outputs else loss


def _episode_items(
    prm: ProcessRewardModel,
    args: PRMConfig,
    rows: Sequence[TargetRow],
    episodes: Sequence[EpisodeRecord],
    targets: TargetsConfig | None,
    *,
    once: bool = False,
) -> list[dict[str, Any]]:
    """Return the whole-episode items of the episodes of ``rows``' games (``once``: each row read once).

    See ``PRMTrainer``: training items weight a row seen k times 1/k; validation items read each row once.
    """
    if args.loss != "soft_bce":
        raise ValueError(f"`whole_episodes` trains the soft_bce loss, not {args.loss!r}: leave one of them out.")
    if not episodes or targets is None:
        raise ValueError("`whole_episodes` needs the rollouts the targets were computed from (`rollouts`).")
    reason = sharing.unsupported(prm.model)
    if reason:
        raise ValueError(f"`whole_episodes` reads the head at many positions of one forward, but {reason}: "
                         "train one row at a time (whole_episodes=False).")  # fmt: skip
    games = {row.game_file for row in rows}
    kept = [episode for episode in episodes if episode.steps[0].context.game_file in games]
    return [{"episode": item} for item in episode_items(kept, rows, targets, prm.token_ids, once=once)]


def _items(rows: Sequence[TargetRow], args: PRMConfig) -> list[dict[str, Any]]:
    """Return the dataset items: (context, Q^, success label) per row, or (chosen, rejected) per preference pair."""
    if args.loss == "soft_bce":
        return [{"context": row.context, "q": row.q, "success": float(row.success)} for row in rows]
    return [{"chosen": c.context, "rejected": r.context} for c, r in preference_pairs(rows, args.preference_delta)]


def prm_metrics(prediction: EvalPrediction) -> dict[str, float | None]:
    """Return the Trainer's validation metrics from its logits: :func:`score_metrics` of their sigmoid.

    The label ids are (Q^, success) per row (whole episodes: per position, in rows padded with ``PAD_LABEL``).

    Example:
        >>> logits = np.array([2.0, -1.0, 0.5, -3.0])
        >>> q, success = np.array([0.9, 0.2, 0.4, 0.1]), np.array([1.0, 0.0, 0.0, 0.0])
        >>> {k: round(v, 3) for k, v in prm_metrics(EvalPrediction(logits, (q, success))).items()}
        {'accuracy': 0.75, 'auc': 1.0, 'ece': 0.091}
    """
    logits = np.asarray(prediction.predictions, dtype=np.float64).reshape(-1)
    q, success = (np.asarray(x, dtype=np.float64).reshape(-1) for x in prediction.label_ids)  # (Q^, success)
    listed = q != PAD_LABEL  # whole episodes come as padded rows of positions
    return score_metrics(1.0 / (1.0 + np.exp(-logits[listed])), q[listed], success[listed])


def score_metrics(probabilities: Any, q: Any, success: Any) -> dict[str, float | None]:
    """Accuracy at 0.5 and expected calibration error against Q^, and the AUC of predicting success.

    ``probabilities`` are the PRM's Q(s, a) per row; ``success`` is :attr:`TargetRow.success` (most rollouts
    through the row were won), so the AUC says how well the scores rank winning actions above the others. When
    the rows hold one class only, the AUC is undefined: it is ``None`` (``null`` in JSON files), with a warning
    saying why.

    Example:
        >>> p, q, success = np.array([0.9, 0.2, 0.6, 0.05]), np.array([0.9, 0.2, 0.4, 0.1]), np.array([1, 0, 0, 0])
        >>> {k: round(v, 3) for k, v in score_metrics(p, q, success).items()}
        {'accuracy': 0.75, 'auc': 1.0, 'ece': 0.062}
    """
    probabilities, q, success = (np.asarray(x, dtype=np.float64).reshape(-1) for x in (probabilities, q, success))
    positive = success > 0.5
    area = auc(probabilities, positive)
    if area is None:
        which = "led to success" if positive.all() else "did not lead to success"
        logger.warning(
            "AUC undefined (reported as None): all %d actions scored %s (most of their rollouts %s), so there is "
            "nothing to rank. More games (a larger validation_fraction) or more episodes give both kinds.",
            len(positive), which, "won" if positive.all() else "lost",
        )
    return {
        "accuracy": float(np.mean((probabilities > 0.5) == (q > 0.5))),
        "auc": area,
        "ece": calibration_error(probabilities, q),
    }


def _pair_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Preference accuracy: how often the chosen action's logit is above the rejected one's."""
    margins = np.asarray(prediction.predictions, dtype=np.float64).reshape(-1)
    return {"accuracy": float(np.mean(margins > 0))}


def auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half); None without both classes.

    Example:
        >>> auc(np.array([0.9, 0.1, 0.5]), np.array([True, False, False]))
        1.0
    """
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def calibration_error(probabilities: np.ndarray, targets: np.ndarray, bins: int = 10) -> float:
    """Return the expected calibration error: the row-weighted mean |mean prediction - mean Q^| per bin."""
    which = np.minimum((probabilities * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(probabilities[members].mean() - targets[members].mean())
    return float(error)


def train_prm(config: TrainPRMConfig) -> Path:
    """Train a PRM as ``config`` says and save it (with the configs behind it) to ``<output_dir>/model``.

    Checkpoints go to ``<output_dir>/checkpoint-<step>`` every ``save_steps`` steps and at the end, with the run's
    settings in ``<output_dir>/config.json``. With ``resume`` (the default), a run finding a complete checkpoint
    there continues from the last one, to the same weights as a run never stopped; its settings and targets must
    be those recorded (the device and the spelling of the paths may differ). A run that already finished with
    them (its model folder is there) returns at once: no model loaded, no validation pass; its recorded
    metrics are logged. Without ``resume`` the checkpoints there are deleted first and the model trained again.
    The validation set is scored once at the end; the model folder, with its ``training.json`` (configs, final
    metrics, log history), appears complete or not at all.

    Weights are kept in float32 and the forward passes run in bf16 autocast where the device computes in it
    (:func:`prm_gym.devices.bf16_is_native`), so small updates are not lost to bf16 rounding.

    Raises:
        FileNotFoundError: the targets folder or the model does not exist.
        ValueError: the targets are empty or malformed, or give no training item; another run is writing
            output_dir; or its checkpoints were written with other settings or targets (named).
    """
    rows = load_targets(config.targets)
    source = load_targets_config(config.targets)  # read now: a damaged file must not wait for the end of training
    record: dict[str, Any] = {
        "targets": source,
        "targets_sha256": hashlib.sha256((Path(config.targets) / TARGETS_FILE).read_bytes()).hexdigest(),
    }
    episodes: list[EpisodeRecord] = []
    if config.whole_episodes:
        from prm_gym.rollout.storage import EPISODES_FILE, load_episodes  # the rollouts, read only here

        if config.rollouts is None:
            raise ValueError("`whole_episodes` needs `rollouts`: the rollouts folder the targets were computed from.")
        episodes = list(load_episodes(config.rollouts))
        record["rollouts_sha256"] = hashlib.sha256((Path(config.rollouts) / EPISODES_FILE).read_bytes()).hexdigest()
    targets = TargetsConfig(**source.get("targets", {}))

    def trainer(prm: ProcessRewardModel, arguments: dict[str, Any]) -> PRMTrainer:
        args = PRMConfig(**arguments, **shared_settings(config, PRMSettings))
        return PRMTrainer(prm, args, rows, episodes, targets)

    return fit_reward_model(config, "train_prm", record, trainer, ignored=("targets", "rollouts"),
                            run="PRM training")  # fmt: skip


def fit_reward_model(
    config: RewardModelRun,
    name: str,
    data: dict[str, Any],
    make_trainer: Callable[[ProcessRewardModel, dict[str, Any]], RewardModelTrainer],
    *,
    ignored: Sequence[str],
    run: str,
) -> Path:
    """Train a reward model in ``config.output_dir`` (resumable, locked, recorded) and save it to ``model/``.

    The one body of ``train-prm`` and ``train-inverse-prm``: the run's record is ``config`` under ``name`` (the
    command's name with underscores; a local model recorded by its real path) and ``data`` (what it is trained
    on, read and fingerprinted by the caller). ``make_trainer(prm, arguments)`` builds the trainer from the model
    and the ``TrainingArguments`` this function decides (output_dir, bf16, use_cpu). ``ignored`` names the fields
    of ``config`` a rerun may change (besides the folder, the device, ``resume`` and ``activation_checkpointing``):
    the data's path, whose content ``data`` fingerprints.
    """
    model = Path(config.model)  # a local model is recorded by its real path: another spelling is the same model
    record: dict[str, Any] = {
        name: dataclasses.asdict(config) | ({"model": str(model.resolve())} if model.exists() else {}),
        **({"lora": dataclasses.asdict(LoraSettings())} if config.lora else {}),
        **data,
    }
    not_compared = {f"{name}.{field}" for field in ("output_dir", "device", "resume", *EXECUTING, *ignored)}
    command = name.replace("_", "-")
    with lock_folder(config.output_dir, run) as output_dir:
        finished = finished_run(output_dir, record, ignored=not_compared) if config.resume else None
        if finished is not None:
            logger.info("%s was trained with these settings and data already (--no-resume trains it again); %s",
                        output_dir / "model", describe_metrics(finished.get("metrics") or {}))
            return output_dir / "model"
        checkpoint = checkpoint_to_resume(
            output_dir, record, resume=config.resume, ignored=not_compared, run=run, command=command
        )
        device = resolve_device(config.device)
        prm = ProcessRewardModel.from_pretrained(
            config.model,
            device=device,
            dtype="float32",
            prompt_config=PromptConfig(max_prompt_tokens=config.max_prompt_tokens),
            lora=LoraSettings() if config.lora else None,
        )
        bf16 = bf16_is_native(device)
        trainer = make_trainer(prm, {"output_dir": str(output_dir), "bf16": bf16, "use_cpu": device.type == "cpu"})
        atomic_write_text(output_dir / RUN_CONFIG_FILE, json.dumps(record, indent=2) + "\n")
        if checkpoint is not None:
            logger.info("Resuming from %s (step %d).", checkpoint, checkpoint_step(checkpoint))
        trainer.train(resume_from_checkpoint=checkpoint)
        record |= {"metrics": trainer.final_metrics(), "log_history": trainer.state.log_history}
        with atomic_directory(output_dir / "model") as model_dir:
            prm.save_pretrained(model_dir, lora_base=config.model if config.lora else None)
            (model_dir / TRAINING_RECORD_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n", "utf-8")
        logger.info("Trained %s; %s", output_dir / "model", describe_metrics(record["metrics"]))
    return output_dir / "model"
