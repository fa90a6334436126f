"""Training an InversePRM: a classifier of expert against policy transitions (Choudhury 2025, Section 3).

The PRM's one logit is Q(s, a). For a transition (s, a, s') with the policy's next action a' (see
:mod:`prm_gym.prm.inverse`), the classifier's logit is ``f = Q(s, a) - gamma * Q(s', a')`` (``f = Q(s, a)`` when
the episode ended with a), and the loss is binary cross-entropy with balanced classes::

    L(Q) = - 1/2 E_expert[ log sigmoid(f) ] - 1/2 E_policy[ log (1 - sigmoid(f)) ]

(each row weighted by ``rows / (2 * rows of its class)``, so that the expert and the policy count alike whatever
their numbers). Both Q(s, a) and Q(s', a') come from the same forward pass and both get gradients: raising f on
an expert transition raises the expert's Q and lowers the value the policy's next action is credited with.

Rows are split into training and validation **by game**, as for AgentPRM; validation reports the loss, the
accuracy of ``f > 0``, and the AUC of f at telling expert transitions from the policy's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from transformers import EvalPrediction, TrainingArguments
from transformers.trainer_utils import IntervalStrategy

from prm_gym.prm.inverse import TRANSITIONS_FILE, Transition, load_transitions, load_transitions_config
from prm_gym.prm.model import ProcessRewardModel, head_logits
from prm_gym.prm.train_config import InversePRMSettings, TrainInversePRMConfig, shared_settings
from prm_gym.prm.training import RewardModelTrainer, auc, fit_reward_model, split_by_game

__all__ = ["InversePRMConfig", "InversePRMTrainer", "inverse_metrics", "train_inverse_prm"]


@dataclass
class InversePRMConfig(InversePRMSettings, TrainingArguments):
    """``TrainingArguments`` with the InversePRM's own settings and defaults (:class:`InversePRMSettings`).

    Example:
        >>> config = InversePRMConfig(output_dir="/tmp/inverse-prm", gamma=0.9)
        >>> config.gamma, config.label_names, config.eval_strategy
        (0.9, ['labels'], <IntervalStrategy.EPOCH: 'epoch'>)
    """

    #: Evaluate at the end of each epoch (and at the end of training) when games are held out.
    eval_strategy: IntervalStrategy | str = "epoch"
    report_to: str | list[str] | None = "none"
    remove_unused_columns: bool = False
    label_names: list[str] | None = field(default_factory=lambda: ["labels"])

    def __post_init__(self) -> None:
        """Check the InversePRM settings, then let ``TrainingArguments`` check its own."""
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"`gamma` should be in [0, 1]. Received {self.gamma}.")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"`validation_fraction` should be in [0, 1). Received {self.validation_fraction}.")
        if self.validation_fraction == 0:
            self.eval_strategy = "no"  # nothing to evaluate
        super().__post_init__()


class _Collator:
    """Encodes a batch's (s, a) contexts, then its (s', a') contexts, as one padded batch of the PRM's inputs."""

    def __init__(self, prm: ProcessRewardModel) -> None:
        self.prm = prm

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        following = [item["transition"].next_context for item in items if not item["transition"].final]
        batch = self.prm.encode([item["transition"].context for item in items] + following)
        return {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "labels": torch.tensor([float(item["transition"].expert) for item in items]),
            "weights": torch.tensor([item["weight"] for item in items], dtype=torch.float32),
            "has_next": torch.tensor([not item["transition"].final for item in items]),
        }


class InversePRMTrainer(RewardModelTrainer):
    """Trains a :class:`ProcessRewardModel` as InversePRM's classifier of expert against policy transitions.

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification, BertTokenizer
        >>> from prm_gym.prm.context import Context
        >>> words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *"you are in a room go to sink 1 look".split()]
        >>> tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(words)})
        >>> bert = BertForSequenceClassification(BertConfig(vocab_size=len(words), hidden_size=16,
        ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=1))
        >>> prm = ProcessRewardModel(bert, tokenizer)
        >>> room = [Context("look", observation="You are in a room.", game_file=f"g{i}") for i in range(4)]
        >>> rows = [Transition(state.propose(a), None, a == "look", "demonstrations" if a == "look" else "pi0")
        ...         for state in room for a in ("look", "go to sink 1")]
        >>> trainer = InversePRMTrainer(prm, InversePRMConfig(output_dir="/tmp/inverse-doc", max_steps=2,
        ...     validation_fraction=0.25, use_cpu=True, save_strategy="no"), rows)
        >>> trainer.train().global_step  # doctest: +ELLIPSIS
        {...}
        2
    """

    def __init__(
        self, prm: ProcessRewardModel, args: InversePRMConfig, transitions: Sequence[Transition], **kwargs: Any
    ) -> None:
        """Split ``transitions`` by game into training and validation sets and set up the trainer on ``prm.model``.

        Raises:
            ValueError: when the training transitions lack expert or policy ones.
        """
        train, valid = split_by_game(transitions, args.validation_fraction, args.seed)
        counts = {"expert": sum(t.expert for t in train), "policy": sum(not t.expert for t in train)}
        if not all(counts.values()):
            raise ValueError(
                f"InversePRM needs expert and policy transitions to train on; the training games have "
                f"{counts['expert']} expert and {counts['policy']} policy ones. Give both demonstrations and "
                "rollouts of the policy on the same games."
            )
        valid_set = _balanced(valid) if valid and len({t.expert for t in valid}) == 2 else []
        super().__init__(
            prm,
            args,
            _balanced(train),
            valid_set,
            no_validation=f"No validation transitions of both classes ({len(valid)} held-out transitions): training "
            "without evaluation. Transitions from more games, or a larger validation_fraction, give a validation set.",
            data_collator=_Collator(prm),
            compute_metrics=inverse_metrics,
            **kwargs,
        )

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Balanced BCE of ``f = Q(s, a) - gamma * Q(s', a')`` against expert (1) or policy (0)."""
        labels, weights, has_next = inputs.pop("labels"), inputs.pop("weights"), inputs.pop("has_next")
        q = head_logits(model, inputs)
        rows = len(labels)
        next_q = torch.zeros(rows, device=q.device, dtype=q.dtype)
        next_q[has_next.to(q.device)] = q[rows:]
        f = q[:rows] - self.args.gamma * next_q  # type: ignore[attr-defined]
        losses = F.binary_cross_entropy_with_logits(f, labels.to(f.device), reduction="none")
        loss = (weights.to(f.device) * losses).mean()
        return (loss, {"logits": f}) if return_outputs else loss


def _balanced(transitions: Sequence[Transition]) -> list[dict[str, Any]]:
    """Dataset items: each transition with the weight ``rows / (2 * rows of its class)`` (classes count alike)."""
    experts = sum(t.expert for t in transitions)
    counts = {True: experts, False: len(transitions) - experts}
    return [{"transition": t, "weight": len(transitions) / (2 * counts[t.expert])} for t in transitions]


def inverse_metrics(prediction: EvalPrediction) -> dict[str, float | None]:
    """Return the accuracy of ``f > 0`` and the AUC of f at telling expert transitions (label 1) from others.

    Example:
        >>> f, expert = np.array([2.0, -1.0, 0.5, -3.0]), np.array([1.0, 0.0, 0.0, 0.0])
        >>> inverse_metrics(EvalPrediction(f, expert))
        {'accuracy': 0.75, 'auc': 1.0}
    """
    f = np.asarray(prediction.predictions, dtype=np.float64).reshape(-1)
    expert = np.asarray(prediction.label_ids, dtype=np.float64).reshape(-1) > 0.5
    return {"accuracy": float(np.mean((f > 0) == expert)), "auc": auc(f, expert)}


def train_inverse_prm(config: TrainInversePRMConfig) -> Path:
    """Train an InversePRM as ``config`` says and save it (with the configs behind it) to ``<output_dir>/model``.

    Resumable and recorded as ``train-prm`` is (:func:`~prm_gym.prm.training.fit_reward_model`): checkpoints
    every ``save_steps``, a finished run returns at once, a rerun with other settings or transitions is refused.

    Raises:
        FileNotFoundError: the transitions folder or the model does not exist.
        ValueError: the transitions are empty or malformed, or lack a class; another run is writing output_dir;
            or its checkpoints were written with other settings or transitions (named).
    """
    transitions = load_transitions(config.transitions)
    record = {
        "transitions": load_transitions_config(config.transitions),
        "transitions_sha256": hashlib.sha256((Path(config.transitions) / TRANSITIONS_FILE).read_bytes()).hexdigest(),
    }

    def trainer(prm: ProcessRewardModel, arguments: dict[str, Any]) -> InversePRMTrainer:
        settings = shared_settings(config, InversePRMSettings)
        return InversePRMTrainer(prm, InversePRMConfig(**arguments, **settings), transitions)

    return fit_reward_model(config, "train_inverse_prm", record, trainer, ignored=("transitions",),
                            run="InversePRM training")  # fmt: skip
