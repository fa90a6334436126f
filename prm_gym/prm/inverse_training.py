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

Packing (``pack_tokens``): the renderer is append-only, so the render of (s, a) is the start of the render of
(s', a'), and the transitions of one episode share its history. Transitions are sorted by their tokens and
packed, while they fit in ``pack_tokens``, into one token trie (:class:`~prm_gym.prm.token_trie.TokenTrie`): one
forward of it reads Q at the last token of every context in the pack, each as a forward of that context alone
would (causal attention, each node at its own position seeing its ancestors only). The loss is the same; the
tokens run are a fraction of one row per context (each transition alone is two renders of ~1,000 tokens).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from transformers import EvalPrediction, TrainingArguments
from transformers.trainer_utils import IntervalStrategy

from prm_gym.prm import shared_prefix as sharing
from prm_gym.prm.inverse import TRANSITIONS_FILE, Transition, load_transitions, load_transitions_config
from prm_gym.prm.model import ProcessRewardModel, head_logits, position_logits
from prm_gym.prm.token_trie import TokenTrie, additive_mask
from prm_gym.prm.train_config import InversePRMSettings, TrainInversePRMConfig, shared_settings
from prm_gym.prm.training import (
    PAD_LABEL,
    RewardModelTrainer,
    as_padded,
    auc,
    fit_reward_model,
    padded_rows,
    split_by_game,
)

__all__ = ["InversePRMConfig", "InversePRMTrainer", "TransitionPack", "inverse_metrics", "pack_transitions",
           "train_inverse_prm"]  # fmt: skip

logger = logging.getLogger(__name__)


@dataclass
class InversePRMConfig(InversePRMSettings, TrainingArguments):  # type: ignore[misc]  # as PRMConfig
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
        if self.pack_tokens < 0:
            raise ValueError(f"`pack_tokens` should be 0 (one row per context) or more. Received {self.pack_tokens}.")
        if self.validation_fraction == 0:
            self.eval_strategy = "no"  # nothing to evaluate
        super().__post_init__()


@dataclass(frozen=True)
class TransitionPack:
    """Transitions whose contexts run as one token trie: where each one's Q(s, a) and Q(s', a') are read."""

    trie: TokenTrie
    #: Per transition: the node where (s, a) ends, where (s', a') ends (-1 when final), its label and weight.
    ends: list[int]
    next_ends: list[int]
    labels: list[float]
    weights: list[float]


def pack_transitions(
    items: Sequence[Mapping[str, Any]], token_ids: Any, max_tokens: int
) -> list[TransitionPack]:
    """Return ``items`` (``{"transition", "weight"}``) packed into token tries of at most ``max_tokens`` nodes.

    Transitions are taken in the order of their tokens (those of (s', a'), or of (s, a) when final), so that
    neighbours share their start; a transition that alone exceeds ``max_tokens`` gets a pack of its own.
    ``token_ids`` renders contexts to model input ids (:meth:`ProcessRewardModel.token_ids`).

    Example:
        >>> from prm_gym.prm.context import Context
        >>> start = Context("task", observation="intro", game_file="g")
        >>> then = start.propose("go").advance("here", {})
        >>> moves = [Transition(start.propose("go"), then.propose(a), expert, "d")
        ...          for a, expert in [("take", True), ("look", False)]]
        >>> words = {word: i for i, word in enumerate(["intro", "go", "here", "take", "look"])}
        >>> def ids(contexts):  # a toy renderer, append-only as the real one: one token per word
        ...     return [[words[w] for turn in c.history for w in turn] + [words[c.observation], words[c.action]]
        ...             for c in contexts]
        >>> (pack,) = pack_transitions([{"transition": t, "weight": 1.0} for t in moves], ids, max_tokens=64)
        >>> len(pack.trie), pack.ends, pack.next_ends, pack.labels
        (5, [1, 1], [3, 4], [1.0, 0.0])
    """
    transitions = [item["transition"] for item in items]
    firsts = token_ids([t.context for t in transitions])
    following = [i for i, t in enumerate(transitions) if not t.final]
    nexts: list[list[int] | None] = [None] * len(transitions)
    for i, ids in zip(following, token_ids([transitions[i].next_context for i in following]), strict=True):
        nexts[i] = ids
    order = sorted(range(len(transitions)), key=lambda i: nexts[i] or firsts[i])
    groups: list[tuple[TokenTrie, list[int]]] = []
    for i in order:
        sequences = [ids for ids in (nexts[i], firsts[i]) if ids is not None]
        trie = groups[-1][0] if groups else TokenTrie()
        need = trie.new_nodes(sequences[0]) + (0 if _starts(sequences[0], firsts[i]) else len(firsts[i]))
        if not groups or len(trie) + need > max_tokens:
            groups.append((TokenTrie(), []))
        trie, rows = groups[-1]
        rows.append(i)
        for ids in sequences:
            trie.add(ids)
    return [
        TransitionPack(
            trie,
            ends=[trie.add(firsts[r])[-1] for r in rows],  # already in the trie: its nodes, none added
            next_ends=[-1 if nexts[r] is None else trie.add(nexts[r])[-1] for r in rows],  # type: ignore[arg-type]
            labels=[float(transitions[r].expert) for r in rows],
            weights=[float(items[r]["weight"]) for r in rows],
        )
        for trie, rows in groups
    ]


def _starts(whole: Sequence[int] | None, start: Sequence[int]) -> bool:
    """Whether ``start`` is the start of ``whole`` (so that its nodes are ``whole``'s)."""
    return whole is not None and list(whole[: len(start)]) == list(start)


class _Collator:
    """Encodes a batch: its (s, a) contexts then its (s', a') ones as padded rows, or its packs as token tries."""

    def __init__(self, prm: ProcessRewardModel) -> None:
        self.prm = prm

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if "pack" in items[0]:
            return self._packs([item["pack"] for item in items])
        following = [item["transition"].next_context for item in items if not item["transition"].final]
        batch = self.prm.encode([item["transition"].context for item in items] + following)
        return {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "labels": torch.tensor([float(item["transition"].expert) for item in items]),
            "weights": torch.tensor([item["weight"] for item in items], dtype=torch.float32),
            "has_next": torch.tensor([not item["transition"].final for item in items]),
        }

    def _packs(self, packs: Sequence[TransitionPack]) -> dict[str, torch.Tensor]:
        """Each pack's trie as one row (nodes at their depths, each seeing its ancestors), padded to the longest."""
        width = max(len(pack.trie) for pack in packs)
        ids = torch.full((len(packs), width), self.prm.tokenizer.pad_token_id, dtype=torch.long)
        positions = torch.zeros(len(packs), width, dtype=torch.long)
        allowed = torch.eye(width, dtype=torch.bool).repeat(len(packs), 1, 1)  # padding sees itself
        for row, pack in enumerate(packs):
            nodes = len(pack.trie)
            ids[row, :nodes] = torch.tensor(pack.trie.tokens)
            positions[row, :nodes] = torch.tensor(pack.trie.depths)
            allowed[row, :nodes, :nodes] = pack.trie.ancestry()
        reads = [(row, end, next_end) for row, pack in enumerate(packs)
                 for end, next_end in zip(pack.ends, pack.next_ends, strict=True)]  # fmt: skip
        rows, ends, next_ends = (torch.tensor(column) for column in zip(*reads, strict=True))
        return {
            "input_ids": ids,
            "attention_mask": additive_mask(allowed, next(self.prm.model.parameters()).dtype)[:, None],
            "position_ids": positions,
            "rows": rows,
            "ends": ends,
            "next_ends": next_ends,
            "labels": padded_rows([pack.labels for pack in packs], PAD_LABEL),  # one row per pack
            "weights": padded_rows([pack.weights for pack in packs], 0.0),
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
        train_set = _balanced(train)
        valid_set = _balanced(valid) if valid and len({t.expert for t in valid}) == 2 else []
        unpackable = sharing.unsupported(prm.model) if args.pack_tokens else None
        if unpackable:
            logger.warning("Training one row per context, no packed transitions: %s.", unpackable)
        if args.pack_tokens and not unpackable:
            train_set = [{"pack": pack} for pack in pack_transitions(train_set, prm.token_ids, args.pack_tokens)]
            valid_set = [{"pack": pack} for pack in pack_transitions(valid_set, prm.token_ids, args.pack_tokens)]
        super().__init__(
            prm,
            args,
            train_set,
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
        if "ends" in inputs:
            return self._packed_loss(model, inputs, return_outputs)
        labels, weights, has_next = inputs.pop("labels"), inputs.pop("weights"), inputs.pop("has_next")
        q = head_logits(model, inputs)
        rows = len(labels)
        next_q = torch.zeros(rows, device=q.device, dtype=q.dtype)
        next_q[has_next.to(q.device)] = q[rows:]
        f = q[:rows] - self.args.gamma * next_q  # type: ignore[attr-defined]
        losses = F.binary_cross_entropy_with_logits(f, labels.to(f.device), reduction="none")
        loss = (weights.to(f.device) * losses).mean()
        return (loss, {"logits": f}) if return_outputs else loss

    def _packed_loss(
        self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the same loss on packs: Q(s, a) and Q(s', a') read at their contexts' last nodes, one forward."""
        labels, weights = inputs.pop("labels"), inputs.pop("weights")
        rows, ends, next_ends = inputs.pop("rows"), inputs.pop("ends"), inputs.pop("next_ends")
        has_next = next_ends >= 0
        reads = torch.cat([rows, rows[has_next]]), torch.cat([ends, next_ends[has_next]])
        logits = position_logits(model, inputs, *reads)
        q, next_q = logits[: len(rows)], torch.zeros_like(logits[: len(rows)])
        next_q[has_next.to(q.device)] = logits[len(rows) :]
        f = q - self.args.gamma * next_q  # type: ignore[attr-defined]
        listed = labels != PAD_LABEL  # the padded rows' real entries, in the order of the reads
        terms = F.binary_cross_entropy_with_logits(f, labels[listed].to(f.device), reduction="none")
        loss = (weights[listed].to(f.device) * terms).mean()
        return (loss, {"logits": as_padded(labels, f)}) if return_outputs else loss


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
    labels = np.asarray(prediction.label_ids, dtype=np.float64).reshape(-1)
    listed = labels != PAD_LABEL  # packs' padding
    f, expert = f[listed], labels[listed] > 0.5
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
