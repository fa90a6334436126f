"""Monte-Carlo Q targets from rollouts, as AgentPRM trains its process reward model on them.

Every (state, action) of the rollouts is keyed by :attr:`Context.key`. Its target is the paper's Eq. 1: the mean,
over the rollouts through it, of the discounted return of that step, normalised to [0, 1]
(:func:`step_return`, :func:`normalised_q`). An episode's outcome is ``win_outcome`` (+1) when it was won, else
``loss_outcome`` (-1, a step-capped episode included), so with the defaults ``Q^ = (mean return + 1) / 2``.
:func:`compute_targets` builds one :class:`TargetRow` per key, :func:`preference_pairs` the (chosen, rejected)
pairs at a state, and :func:`save_targets` / :func:`load_targets` keep them in a folder (``targets.jsonl``, one
self-contained row per (state, action), and ``config.json``).

A row also counts the rollouts through it that were won (``wins``, of ``visits``): its success label,
:attr:`TargetRow.success`, is "most of the rollouts through this (state, action) were won", the label of the
PRM's AUC. Q^ alone cannot give it: one late win and one early loss average above 0.5. Target files written
before ``wins`` was recorded still load, with ``wins=None``: their label falls back to Q^ > 0.5, and
:func:`load_targets` logs a warning saying so (recompute them with ``prm-gym targets`` for the real label).

States are keyed by their text (task, history, observation), as in the paper: the agent's view, so two games
that read the same share a target.

Rollouts that start along an expert trajectory (``prm-gym collect --expert-prefix-share``) begin with gold
commands the policy did not choose; :func:`target_steps` says which of their steps are targets
(``TargetsConfig.expert_steps``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from tqdm.auto import tqdm

from prm_gym.envs.alfworld.data import select_games
from prm_gym.io import read_folder_config, read_rows_folder, write_rows_folder
from prm_gym.prm.context import Context

logger = logging.getLogger(__name__)

__all__ = [
    "EpisodeRecord",
    "StepRecord",
    "TargetRow",
    "TargetsConfig",
    "compute_targets",
    "load_targets",
    "load_targets_config",
    "normalised_q",
    "preference_pairs",
    "save_targets",
    "spread_games",
    "step_return",
    "target_steps",
]

#: Files of a targets folder.
TARGETS_FILE = "targets.jsonl"
#: The discount conventions: by distance to the episode's end (the paper's Eq. 1) or from its start.
DISCOUNTS = ("to_end", "from_start")
#: Which steps of an expert prefix are targets (:func:`target_steps`).
EXPERT_STEPS = ("last", "all", "none")


@dataclass
class TargetsConfig:
    """How rollouts become Q targets (the AgentPRM paper's choices are the defaults)."""

    #: Discount factor gamma, in [0, 1].
    gamma: float = 0.95
    #: "to_end": step t of a T-step episode returns gamma^(T-1-t) * outcome, so actions closer to the outcome
    #: weigh more (the paper's Eq. 1); "from_start": gamma^t * outcome, so later actions weigh less.
    discount: Literal["to_end", "from_start"] = "to_end"
    #: Outcome of a won episode.
    win_outcome: float = 1.0
    #: Outcome of an episode that was not won (lost or cut at the step cap).
    loss_outcome: float = -1.0
    #: Keep only (state, action) pairs that at least this many rollouts went through.
    min_visits: int = 1
    #: Steps of an expert prefix (rollouts that start along the walkthrough) that are targets: "last" (the one
    #: pi0 plays on from: its return samples Q^pi0), "all" or "none" (see :func:`target_steps`).
    expert_steps: Literal["last", "all", "none"] = "last"
    #: Use only the rollouts of this many of their games, spread evenly over the rollouts' order (every task type
    #: when the rollouts' games are spread); None: all of them. A smaller training set from the same rollouts:
    #: the paper's PRM trained on few vs many rollouts.
    num_games: int | None = None

    def __post_init__(self) -> None:
        """Check the settings.

        Raises:
            ValueError: on a gamma outside [0, 1], an unknown discount or expert_steps, outcomes with
                win <= loss, min_visits < 1, or num_games < 1.
        """
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"`gamma` should be in the interval [0, 1]. Received {self.gamma}.")
        if self.discount not in DISCOUNTS:
            raise ValueError(f"`discount` should be one of {DISCOUNTS}. Received {self.discount!r}.")
        if not self.win_outcome > self.loss_outcome:
            raise ValueError(
                f"`win_outcome` should be greater than `loss_outcome`. Received {self.win_outcome} and "
                f"{self.loss_outcome}."
            )
        if self.min_visits < 1:
            raise ValueError(f"`min_visits` should be at least 1. Received {self.min_visits}.")
        if self.num_games is not None and self.num_games < 1:
            raise ValueError(f"`num_games` should be at least 1 (or None: all games). Received {self.num_games}.")
        if self.expert_steps not in EXPERT_STEPS:
            raise ValueError(f"`expert_steps` should be one of {EXPERT_STEPS}. Received {self.expert_steps!r}.")


class StepRecord(Protocol):
    """What targets read of a played step: the context its action was taken in (action proposed)."""

    @property
    def context(self) -> Context:
        """The state and the action taken in it."""
        ...

    @property
    def expert_prefix(self) -> bool:
        """Whether the action is a gold command replayed before the policy played (an expert prefix)."""
        ...


class EpisodeRecord(Protocol):
    """What targets read of a played episode (:class:`prm_gym.rollout.Episode` is one): its id, steps, outcome.

    A protocol rather than the rollouts' class, so that the targets depend on the data they read, not on the
    package that collects and stores it.
    """

    @property
    def episode_id(self) -> str:
        """The episode's name, for error messages."""
        ...

    @property
    def steps(self) -> Sequence[StepRecord]:
        """Its steps, in order."""
        ...

    @property
    def won(self) -> bool:
        """Whether it was won."""
        ...


def spread_games(episodes: Iterable[EpisodeRecord], num_games: int | None) -> list[EpisodeRecord]:
    """Return the episodes of ``num_games`` of the games they list (by their first step's game), or all.

    The games are taken evenly spread over the order in which the episodes list them
    (:func:`~prm_gym.envs.alfworld.data.select_games`), so that a subset of rollouts collected on games spread
    over the task types still covers every type.

    Example:
        >>> from types import SimpleNamespace as Record
        >>> played = [Record(steps=[Record(context=Context("t", observation="o", game_file=game))])
        ...           for game in ("g1", "g2", "g1", "g3", "g4")]
        >>> [e.steps[0].context.game_file for e in spread_games(played, 2)]
        ['g1', 'g1', 'g3']
    """
    episodes = list(episodes)
    games = list(dict.fromkeys(episode.steps[0].context.game_file for episode in episodes))
    kept = set(select_games(games, num_games))
    return [episode for episode in episodes if episode.steps[0].context.game_file in kept]


def step_return(won: bool, steps_to_end: int, config: TargetsConfig, t: int | None = None) -> float:
    """Return the discounted return of one step of an episode whose only reward is its outcome (Eq. 1).

    Args:
        won: Whether the episode was won.
        steps_to_end: Actions taken after this one until the episode ended (T - 1 - t).
        config: The discount and the outcomes.
        t: The step's index from the episode's start; needed by the "from_start" convention only.

    Returns:
        ``gamma ** steps_to_end * outcome`` ("to_end") or ``gamma ** t * outcome`` ("from_start").

    Raises:
        ValueError: when the "from_start" convention is asked without ``t``.

    Example:
        >>> step_return(True, 2, TargetsConfig(gamma=0.5)), step_return(False, 0, TargetsConfig())
        (0.25, -1.0)
    """
    outcome = config.win_outcome if won else config.loss_outcome
    if config.discount == "to_end":
        return config.gamma**steps_to_end * outcome
    if t is None:
        raise ValueError("The 'from_start' discount needs the step's index `t`.")
    return config.gamma**t * outcome


def target_steps(episode: EpisodeRecord, config: TargetsConfig) -> list[tuple[int, StepRecord]]:
    """Return the steps of ``episode`` that are targets, with their index ``t``: all but part of an expert prefix.

    An episode that starts along an expert trajectory replays k gold commands, then pi0 plays on. The return of
    the last of them, a*_{k-1}, is a sample of Q^pi0(s_{k-1}, a*_{k-1}): pi0 alone plays after it, so it is a
    valid target, and the one that puts positive targets near the goal ("last", the default). An earlier gold
    step is followed by more gold commands before pi0 takes over: its return samples the Q of that mixed policy,
    higher than Q^pi0, and would be averaged, under the same key, with pi0's own rollouts through that (state,
    action); "last" leaves those steps out, "all" keeps them (Q of the reset distribution's policy), "none"
    keeps only pi0's steps. The prefix is the episode's first steps (the runner records it so).

    Example:
        >>> from prm_gym.rollout import Episode, Step
        >>> played = Episode.from_actions("task", ["intro", "here", "there"], ["go", "take", "put"], won=True)
        >>> replayed = Episode("0:1", [Step(s.context, s.reward, s.won, s.done, expert_prefix=t < 2)
        ...                            for t, s in enumerate(played.steps)])
        >>> [t for t, _ in target_steps(replayed, TargetsConfig())], len(target_steps(played, TargetsConfig()))
        ([1, 2], 3)
    """
    prefix = sum(step.expert_prefix for step in episode.steps)
    skipped = {"all": 0, "last": max(prefix - 1, 0), "none": prefix}[config.expert_steps]
    return list(enumerate(episode.steps))[skipped:]


def normalised_q(q: float, config: TargetsConfig) -> float:
    """Map a mean return from [loss_outcome, win_outcome] to [0, 1]: ``(q - loss) / (win - loss)``.

    Example:
        >>> normalised_q(0.5, TargetsConfig())
        0.75
    """
    return (q - config.loss_outcome) / (config.win_outcome - config.loss_outcome)


@dataclass(frozen=True)
class TargetRow:
    """The Monte-Carlo target of one (state, action): its context, normalised Q^, rollouts and won rollouts."""

    #: The state and the action taken in it (:meth:`Context.propose`); ``game_file`` is the first rollout's game.
    context: Context
    #: Mean discounted return of the rollouts through it, normalised to [0, 1].
    q: float
    #: How many rollout steps went through it.
    visits: int
    #: How many of those were steps of won episodes; None when unknown (target files older than this field).
    wins: int | None = None

    @property
    def success(self) -> bool:
        """Whether most rollouts through this (state, action) were won (``wins / visits > 0.5``).

        Without ``wins`` (an old target file) it falls back to ``q > 0.5``, which a late win and an early loss
        can tip the other way.

        Example:
            >>> row = TargetRow(Context("t", observation="o", action="a"), q=0.6, visits=2, wins=1)
            >>> row.success, dataclasses.replace(row, wins=None).success
            (False, True)
        """
        if self.wins is None:
            return self.q > 0.5
        return 2 * self.wins > self.visits

    @property
    def key(self) -> str:
        """The (state, action) key (:attr:`Context.key`)."""
        return self.context.key

    @property
    def state_key(self) -> str:
        """The state's key (:attr:`Context.state_key`): rows that share it are actions at one state."""
        return self.context.state_key

    @property
    def game_file(self) -> str | None:
        """The game of the first rollout through this (state, action)."""
        return self.context.game_file

    def to_dict(self) -> dict[str, Any]:
        """Return a ``targets.jsonl`` row: the context's fields, ``key``, ``state_key``, ``q``, ``visits``, ``wins``."""
        return {
            **self.context.to_dict(),
            "key": self.key,
            "state_key": self.state_key,
            "q": self.q,
            "visits": self.visits,
            "wins": self.wins,
        }

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> TargetRow:
        """Rebuild a row from :meth:`to_dict`'s output; a row without ``wins`` (an older file) gets ``wins=None``.

        Raises:
            ValueError: when fields are missing, ``q`` / ``visits`` are not numbers, or ``wins`` is not an
                integer in [0, visits].
        """
        missing = [name for name in ("action", "q", "visits") if name not in row]
        if missing:
            raise ValueError(f"A target row needs the fields {missing}; it has {sorted(row)}.")
        q, visits = row["q"], row["visits"]
        if (
            isinstance(q, bool)
            or not isinstance(q, (int, float))
            or isinstance(visits, bool)
            or not isinstance(visits, int)
        ):
            raise ValueError(f"A target row's `q` is a number and `visits` an integer. Received {q!r}, {visits!r}.")
        wins = row.get("wins")
        if wins is not None and (isinstance(wins, bool) or not isinstance(wins, int) or not 0 <= wins <= visits):
            raise ValueError(f"A target row's `wins` is an integer in [0, visits={visits}]. Received {wins!r}.")
        return cls(Context.from_dict(row), float(q), visits, wins)


def compute_targets(
    episodes: Iterable[EpisodeRecord], config: TargetsConfig | None = None, *, progress: bool = False
) -> list[TargetRow]:
    """Return the Monte-Carlo Q target of every (state, action) of ``episodes``, in order of first visit.

    Args:
        episodes: Rollouts (:func:`prm_gym.rollout.load_episodes`, or any :class:`EpisodeRecord`); each step's
            context has its action.
        config: Discount, outcomes, ``min_visits``, which expert-prefix steps count (:func:`target_steps`) and
            how many games' rollouts (:func:`spread_games`); the paper's defaults when omitted.
        progress: Show a progress bar over episodes.

    Returns:
        One row per key visited at least ``config.min_visits`` times, with its visits and won visits.

    Raises:
        ValueError: when there are no episodes, or a step's context has no action.

    Example:
        >>> from prm_gym.rollout import Episode
        >>> won = Episode.from_actions("task", ["intro", "here"], ["go", "take"], won=True)
        >>> lost = Episode.from_actions("task", ["intro", "here"], ["go", "drop"], won=False)
        >>> [(row.context.action, row.q, row.visits, row.wins) for row in compute_targets([won, lost])]
        [('go', 0.5, 2, 1), ('take', 1.0, 1, 1), ('drop', 0.0, 1, 0)]
    """
    config = config or TargetsConfig()
    totals: dict[str, float] = {}
    visits: dict[str, int] = {}
    wins: dict[str, int] = {}
    first: dict[str, Context] = {}
    count = 0
    for episode in tqdm(spread_games(episodes, config.num_games), desc="targets", unit="episode",
                        disable=not progress):  # fmt: skip
        count += 1
        length = len(episode.steps)
        for t, step in target_steps(episode, config):
            context = step.context
            if context.action is None:
                raise ValueError(f"Step {t} of episode {episode.episode_id!r} has no action: rollouts record one.")
            key = context.key
            first.setdefault(key, context)
            totals[key] = totals.get(key, 0.0) + step_return(episode.won, length - 1 - t, config, t=t)
            visits[key] = visits.get(key, 0) + 1
            wins[key] = wins.get(key, 0) + int(episode.won)
    if count == 0:
        raise ValueError("No episodes to compute targets from.")
    return [
        TargetRow(context, normalised_q(totals[key] / visits[key], config), visits[key], wins[key])
        for key, context in first.items()
        if visits[key] >= config.min_visits
    ]


def preference_pairs(targets: Sequence[TargetRow], delta: float) -> list[tuple[TargetRow, TargetRow]]:
    """Return (chosen, rejected) pairs of actions at the same state whose Q^ differ by at least ``delta``.

    Pairs are relative (two actions of one state compared), not thresholded on an absolute Q^; states come in
    order of first appearance, and the pairs of a state in the order of its rows.

    Raises:
        ValueError: when ``delta`` is not in (0, 1].

    Example:
        >>> start = Context("task", observation="intro")
        >>> rows = [TargetRow(start.propose("a"), 0.9, 4), TargetRow(start.propose("b"), 0.2, 4)]
        >>> [(chosen.context.action, rejected.context.action) for chosen, rejected in preference_pairs(rows, 0.5)]
        [('a', 'b')]
    """
    if not 0.0 < delta <= 1.0:
        raise ValueError(f"`delta` should be in the interval (0, 1]. Received {delta}.")
    by_state: dict[str, list[TargetRow]] = {}
    for row in targets:
        by_state.setdefault(row.state_key, []).append(row)
    pairs = []
    for rows in by_state.values():
        for i, one in enumerate(rows):
            for other in rows[i + 1 :]:
                if abs(one.q - other.q) >= delta:
                    pairs.append((one, other) if one.q > other.q else (other, one))
    return pairs


def save_targets(
    targets: Sequence[TargetRow],
    path: str | os.PathLike[str],
    config: TargetsConfig,
    source: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``targets.jsonl`` and ``config.json`` (``config`` and the ``source`` rollouts' config) atomically.

    Returns:
        The folder.

    Raises:
        ValueError: when ``targets`` is empty.
    """
    if not targets:
        raise ValueError(f"No targets to save (min_visits={config.min_visits} may have left none).")
    settings = {field.name: getattr(config, field.name) for field in dataclasses.fields(TargetsConfig)}
    return write_rows_folder(path, TARGETS_FILE, (row.to_dict() for row in targets),
                             {"targets": settings, "source": dict(source or {})})  # fmt: skip


def load_targets(path: str | os.PathLike[str]) -> list[TargetRow]:
    """Read the targets :func:`save_targets` wrote to a folder.

    A file written before ``wins`` was recorded loads with ``wins=None`` on its rows, and a warning is logged:
    their success label (:attr:`TargetRow.success`) falls back to Q^ > 0.5.

    Raises:
        FileNotFoundError: when the folder or its ``targets.jsonl`` does not exist.
        ValueError: when the file is empty or a row is malformed (the line is named).
    """
    rows = read_rows_folder(path, TARGETS_FILE, TargetRow.from_dict, command="targets")
    unknown = sum(row.wins is None for row in rows)
    if unknown:
        logger.warning(
            "%d of the %d rows of %s have no `wins`: their success label falls back to Q^ > 0.5. Recompute the "
            "targets with `prm-gym targets` for the real label (most rollouts through the row won).",
            unknown, len(rows), Path(path) / TARGETS_FILE,
        )
    return rows


def load_targets_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return a targets folder's ``config.json``: ``targets`` (the :class:`TargetsConfig`), ``source``, version.

    Raises:
        FileNotFoundError: when it does not exist.
        ValueError: when it is not a JSON object (damaged): the file is named.
    """
    return read_folder_config(path, command="targets")
