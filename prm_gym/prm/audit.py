r"""Check reward models against what really happened: ``prm-gym audit-prm FOLDER[=LABEL]... --reward-models Q...``.

A policy optimised against a PRM (Best-of-N with larger N, a policy improved against it) picks the actions the
PRM scores highest, so the PRM's scores of the actions played rise. Whether success rises with them is the
question the paper's reward-hacking experiment asks (a PRM trained on few rollouts is exploited: its scores go
up while success goes down). This module measures both sides on played episodes (evaluations or rollouts):

* every (state, action) of the episodes gets its Monte-Carlo target Q^ from the return that followed it
  (:func:`~prm_gym.prm.targets.compute_targets`, the paper's Eq. 1, with the settings given: use the PRM's);
* each reward model scores every one of them, Q(s, a), on one forward per episode, its head read at the end of
  each action (the renderer is append-only, so by causal attention each reading is the score of that step's
  context alone: :mod:`~prm_gym.prm.episode_items`, as whole-episode training reads it); models that cannot
  (encoders) score one context per call;
* per (reward model, folder): the success rate, the mean score next to the mean Q^ (a calibrated PRM has them
  equal; scores above Q^ that grow along optimisation are reward hacking), the AUC of the scores at telling
  actions of won episodes from the others, accuracy at 0.5 and calibration error
  (:func:`~prm_gym.prm.training.score_metrics`: the same numbers as the PRM's validation).

On evaluation episodes of held-out games (valid_unseen), this is the PRM's quality on games it never saw.
The output folder gets ``audit.md``, ``audit.json`` and ``audit.png`` (mean score and mean Q^ per folder, one
line per reward model).

Example (from the command line)::

    prm-gym audit-prm runs/loop/eval/pi0-s0=pi0 runs/loop/eval/bon8-pi0-q0-s0=BoN8 \
        --reward-models runs/loop/q0/model=Q0 runs/q0-few/model=Q0-few --output-dir runs/audit
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import tyro
from tqdm.auto import tqdm

import prm_gym
from prm_gym.evaluation import png_bytes
from prm_gym.io import atomic_write_bytes, atomic_write_text
from prm_gym.prm.episode_items import episode_items
from prm_gym.prm.targets import EpisodeRecord, TargetRow, TargetsConfig, compute_targets
from prm_gym.report import folder_and_label
from prm_gym.rollout.storage import load_episodes

if TYPE_CHECKING:
    from prm_gym.prm.model import ProcessRewardModel

__all__ = ["AUDIT_FILES", "AuditConfig", "AuditRow", "audit_prms", "audit_rows", "episode_scores"]

#: Files the audit writes: the table, every number, the chart.
AUDIT_FILES = ("audit.md", "audit.json", "audit.png")


@dataclass
class AuditConfig(TargetsConfig):
    """Score played episodes' actions with reward models, beside the returns that followed them (Q^).

    The Q^ settings (gamma, discount, outcomes) are those of ``prm-gym targets``: give the ones the reward
    models were trained with.

    Example:
        >>> AuditConfig(runs=("runs/eval/pi0-s0=pi0",), reward_models=("runs/q0/model=Q0",)).output_dir
        'runs/audit'
    """

    #: Episode folders (`prm-gym eval` or `prm-gym collect` output); `FOLDER=label` names its row.
    runs: Annotated[tuple[str, ...], tyro.conf.Positional, tyro.conf.arg(metavar="FOLDER[=LABEL]...")] = ()
    #: Reward models (`prm-gym train-prm` model folders); `PATH=name` names its line.
    reward_models: tuple[str, ...] = ()
    #: Where audit.md, audit.json and audit.png go.
    output_dir: str = "runs/audit"
    #: "auto" (cuda, then mps, then cpu), "cpu", "cuda", ...
    device: str = "auto"


@dataclass(frozen=True)
class AuditRow:
    """One reward model on one folder's episodes: what it predicted and what happened."""

    reward_model: str
    run: str
    episodes: int
    #: Share of the episodes won, in %.
    success: float
    #: (state, action) rows scored (one per distinct one, as targets are).
    actions: int
    #: The mean of the reward model's Q(s, a) over the rows, and of their Monte-Carlo Q^.
    mean_score: float
    mean_q: float
    #: :func:`~prm_gym.prm.training.score_metrics`: accuracy, AUC (None with one class), ece.
    metrics: dict[str, float | None]


def audit_rows(scores: Sequence[float], rows: Sequence[TargetRow], *, reward_model: str, run: str,
               episodes: int, won: int) -> AuditRow:  # fmt: skip
    """Summarise a reward model's ``scores`` of target ``rows`` (of ``episodes`` episodes, ``won`` of them won).

    Example:
        >>> from prm_gym.prm.context import Context
        >>> rows = [TargetRow(Context("t", observation="o", action=a), q, 1, w) for a, q, w in
        ...         [("go", 0.9, 1), ("look", 0.0, 0)]]
        >>> row = audit_rows([0.8, 0.3], rows, reward_model="Q", run="pi0", episodes=2, won=1)
        >>> row.success, row.mean_score, row.mean_q, row.metrics["auc"]
        (50.0, 0.55, 0.45, 1.0)
    """
    from prm_gym.prm.training import score_metrics  # numpy and torch: only when scoring

    return AuditRow(
        reward_model=reward_model,
        run=run,
        episodes=episodes,
        success=100.0 * won / episodes,
        actions=len(rows),
        mean_score=round(statistics.fmean(scores), 6),
        mean_q=round(statistics.fmean(row.q for row in rows), 6),
        metrics=score_metrics(scores, [row.q for row in rows], [row.success for row in rows]),
    )


def audit_prms(config: AuditConfig, *, progress: bool = True) -> list[AuditRow]:
    """Score every folder's actions with every reward model; write the table, the numbers and the chart.

    Raises:
        ValueError: no folder or no reward model given, a label given twice, or a folder without episodes.
        FileNotFoundError: a folder or a reward model that does not exist (named).
    """
    from prm_gym.prm.model import ProcessRewardModel  # torch: only when scoring

    if not config.runs or not config.reward_models:
        raise ValueError("Give episode folders (positional) and --reward-models to audit: at least one of each.")
    runs = _named(config.runs, "folder")
    models = _named(config.reward_models, "reward model")
    targets = TargetsConfig(**{f.name: getattr(config, f.name) for f in dataclasses.fields(TargetsConfig)})
    played = {name: load_episodes(folder) for name, folder in runs.items()}  # bad folders: before any model loads
    rows = {name: compute_targets(episodes, targets) for name, episodes in played.items()}
    audited = []
    for model_name, path in models.items():
        if not Path(path).exists():
            raise FileNotFoundError(f"No reward model at {path}: give a `prm-gym train-prm` model folder.")
        prm = ProcessRewardModel.from_pretrained(path, device=config.device)
        for run, episodes in played.items():
            scores = episode_scores(prm, episodes, rows[run], targets, progress=progress, desc=f"{model_name} on {run}")
            audited.append(audit_rows(scores, rows[run], reward_model=model_name, run=run, episodes=len(episodes),
                                      won=sum(e.won for e in episodes)))  # fmt: skip
    _write(audited, Path(config.output_dir), targets, runs, models)
    return audited


def episode_scores(
    prm: ProcessRewardModel,
    episodes: Sequence[EpisodeRecord],
    rows: Sequence[TargetRow],
    targets: TargetsConfig,
    *,
    progress: bool = False,
    desc: str = "scoring",
) -> list[float]:
    """Return ``prm``'s Q(s, a) of each of ``rows`` (the targets of ``episodes``), in the rows' order.

    One forward per episode reads the head at the end of each of its actions, each (state, action) at its first
    step (:func:`~prm_gym.prm.episode_items.episode_items`): a T-step episode costs one forward of its length,
    not T contexts. A model that cannot read many positions of one forward (an encoder) scores one context per
    call instead, in episode order, so that each turn runs only its new tokens on the cached prefix.
    """
    import torch  # only when scoring

    from prm_gym.prm import shared_prefix as sharing
    from prm_gym.prm.model import position_logits

    if sharing.unsupported(prm.model):
        return [prm.score([row.context])[0] for row in tqdm(rows, desc=desc, unit="action", disable=not progress)]
    items = episode_items(episodes, rows, targets, prm.token_ids, once=True)
    scores: dict[str, float] = {}
    was_training = prm.model.training
    prm.model.eval()
    try:
        with torch.inference_mode():
            for item in tqdm(items, desc=desc, unit="forward", disable=not progress):
                batch = {"input_ids": torch.tensor([item.token_ids]),
                         "attention_mask": torch.ones(1, len(item.token_ids), dtype=torch.long)}  # fmt: skip
                logits = position_logits(prm.model, batch, torch.zeros(len(item.positions), dtype=torch.long),
                                         torch.tensor(item.positions))  # fmt: skip
                scores.update(zip(item.keys, torch.sigmoid(logits).tolist(), strict=True))
    finally:
        prm.model.train(was_training)
    return [scores[row.key] for row in rows]


def _named(specs: Sequence[str], what: str) -> dict[str, str]:
    """``{label: path}`` from ``PATH[=label]`` specs (a path alone is its own label)."""
    named: dict[str, str] = {}
    for spec in specs:
        path, label = folder_and_label(spec)
        label = label or path
        if label in named:
            raise ValueError(f"Two {what}s are named {label!r}: give each its own label (PATH=label).")
        named[label] = path
    return named


def _write(rows: Sequence[AuditRow], output: Path, targets: TargetsConfig, runs: dict[str, str],
           models: dict[str, str]) -> None:  # fmt: skip
    """Write audit.md (a row per reward model and folder), audit.json and audit.png to ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Reward models against what happened",
        "",
        "Per folder's (state, action)s: the reward model's mean Q(s, a) beside their mean Monte-Carlo Q^ (the "
        "return that followed), the AUC of telling actions of won episodes from the others, accuracy at 0.5 and "
        "expected calibration error against Q^.",
        "",
        "| reward model | folder | episodes | success % | actions | mean Q(s, a) | mean Q^ | AUC | accuracy | ECE |",
        "|:--|:--|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        auc = row.metrics["auc"]
        lines.append(
            f"| {row.reward_model} | {row.run} | {row.episodes} | {row.success:.1f} | {row.actions} | "
            f"{row.mean_score:.3f} | {row.mean_q:.3f} | {'undefined' if auc is None else f'{auc:.3f}'} | "
            f"{row.metrics['accuracy']:.3f} | {row.metrics['ece']:.3f} |"
        )
    atomic_write_text(output / AUDIT_FILES[0], "\n".join(lines) + "\n")
    record: dict[str, Any] = {
        "folders": runs,
        "reward_models": models,
        "targets": dataclasses.asdict(targets),
        "prm_gym_version": prm_gym.__version__,
        "rows": [dataclasses.asdict(row) for row in rows],
    }
    atomic_write_text(output / AUDIT_FILES[1], json.dumps(record, indent=2) + "\n")
    atomic_write_bytes(output / AUDIT_FILES[2], _chart(rows, list(runs)))


def _chart(rows: Sequence[AuditRow], runs: list[str]) -> bytes:
    """Mean Q(s, a) per folder, a line per reward model, beside the folders' mean Q^ and success; PNG bytes."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    figure = Figure(figsize=(max(6.0, 1.2 * len(runs) + 2.0), 3.8), dpi=100, layout="constrained")
    axes = figure.subplots()
    x = range(len(runs))
    first = {row.run: row for row in reversed(rows)}
    axes.plot(x, [first[run].mean_q for run in runs], "k-o", label="mean Q^ (what followed)")
    axes.plot(x, [first[run].success / 100 for run in runs], "k:s", label="success rate")
    for model in dict.fromkeys(row.reward_model for row in rows):
        mine = {row.run: row.mean_score for row in rows if row.reward_model == model}
        axes.plot(x, [mine[run] for run in runs], "--o", label=f"mean Q(s, a) of {model}")
    axes.set_xticks(list(x), runs, rotation=20, ha="right", fontsize=8)
    axes.set_ylim(0, 1)
    axes.set_ylabel("value")
    axes.set_title("Reward models' scores of the actions played vs what followed", fontsize=10)
    axes.legend(fontsize=7)
    return png_bytes(figure)
