"""How informative Monte-Carlo targets are: the share of won rollouts and of positive targets, by rollout kind.

With a weak policy, rollouts from the game's start rarely win and their targets collapse towards 0; rollouts that
start along an expert trajectory (the paper's reset distribution) should win more often near the goal.
:func:`target_shares` reports both figures for each kind of rollout ("from start", "expert prefix"), as
``prm-gym targets`` prints them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prm_gym.prm.targets import EpisodeRecord, TargetRow, TargetsConfig, target_steps

__all__ = ["TargetShares", "target_shares"]

#: The kinds of rollouts, in report order.
KINDS = ("from start", "expert prefix")


@dataclass(frozen=True)
class TargetShares:
    """Won rollouts of one kind, and the positive targets (Q^ > 0.5) among the targets their steps reached.

    A target is positive when the rollouts through it won more than they lost (mean return above the midpoint of
    the win and loss outcomes). A target that both kinds reached counts in both.

    Example:
        >>> print(TargetShares("from start", episodes=8, won=1, targets=40, positive=2))
        from start: 8 episodes, 12.5% won; 40 targets, 5.0% positive (Q^ > 0.5)
    """

    #: "from start" or "expert prefix".
    kind: str
    #: Rollouts of this kind.
    episodes: int
    #: Of which won.
    won: int
    #: Distinct (state, action) targets reached by their target steps (:func:`~prm_gym.prm.targets.target_steps`).
    targets: int
    #: Of which positive.
    positive: int

    def __str__(self) -> str:
        """One line: the counts and the shares."""
        won, positive = self.won / max(self.episodes, 1), self.positive / max(self.targets, 1)
        return (
            f"{self.kind}: {self.episodes} episodes, {won:.1%} won; {self.targets} targets, {positive:.1%} positive "
            "(Q^ > 0.5)"
        )


def target_shares(
    episodes: Iterable[EpisodeRecord], targets: Sequence[TargetRow], config: TargetsConfig
) -> list[TargetShares]:
    """Return the won rollouts and positive targets of each kind of rollout present, in :data:`KINDS` order.

    Args:
        episodes: The rollouts the targets were computed from.
        targets: Their targets (:func:`~prm_gym.prm.targets.compute_targets` with ``config``); a step whose
            target was dropped (``min_visits``) counts for none.
        config: The targets' config (which expert-prefix steps are targets).

    Example:
        >>> from prm_gym.prm.targets import compute_targets
        >>> from prm_gym.rollout import Episode
        >>> won = Episode.from_actions("task", ["intro", "here"], ["go", "take"], won=True)
        >>> lost = Episode.from_actions("task", ["intro", "here"], ["go", "drop"], won=False)
        >>> [str(shares) for shares in target_shares([won, lost], compute_targets([won, lost]), TargetsConfig())]
        ['from start: 2 episodes, 50.0% won; 3 targets, 33.3% positive (Q^ > 0.5)']
    """
    q = {row.key: row.q for row in targets}
    episode_counts = dict.fromkeys(KINDS, 0)
    won = dict.fromkeys(KINDS, 0)
    reached: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for episode in episodes:
        kind = KINDS[any(step.expert_prefix for step in episode.steps)]
        episode_counts[kind] += 1
        won[kind] += int(episode.won)
        reached[kind].update(key for _, step in target_steps(episode, config) if (key := step.context.key) in q)
    positive = {kind: sum(q[key] > 0.5 for key in keys) for kind, keys in reached.items()}
    return [
        TargetShares(kind, episode_counts[kind], won[kind], len(reached[kind]), positive[kind])
        for kind in KINDS
        if episode_counts[kind]
    ]
