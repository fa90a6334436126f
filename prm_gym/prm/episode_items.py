"""Whole-episode PRM training items: one forward per rollout, the head read at the end of every action in it.

The renderer is append-only (:mod:`prm_gym.prm.prompt`): the render of step t with its action is the start of
the render of step t+1. So one forward over an episode's last step's render computes, by causal attention, the
logit a per-row forward would give at every earlier step's last token, and a rollout of T steps costs one
forward of its length instead of T forwards summing to about T/2 times its length. Each step that is a target
(:func:`~prm_gym.prm.targets.target_steps`) contributes the soft-BCE term of its (state, action)'s Q^, weighted
``1/k`` when k rollout steps share that (state, action), so that every target row weighs what it weighs in
per-row training. An episode whose renders do not extend each other (older turns dropped at the token budget)
is split into one item per step.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prm_gym.prm.context import Context
from prm_gym.prm.targets import EpisodeRecord, TargetRow, TargetsConfig, target_steps

__all__ = ["EpisodeItem", "episode_items"]


@dataclass(frozen=True)
class EpisodeItem:
    """One forward's worth of training: token ids, and at each head position its Q^, success label and weight."""

    token_ids: list[int]
    #: Where the head is read: the last token of each step's render (its action's end).
    positions: list[int]
    q: list[float]
    success: list[float]
    weights: list[float]
    game_file: str | None
    #: The (state, action) each head position reads (:attr:`Context.key <prm_gym.prm.context.Context.key>`).
    keys: list[str]


def episode_items(
    episodes: Iterable[EpisodeRecord],
    rows: Sequence[TargetRow],
    config: TargetsConfig,
    token_ids: Callable[[Sequence[Context]], list[list[int]]],
    *,
    once: bool = False,
) -> list[EpisodeItem]:
    """Return the training items of ``episodes``: one per episode, or one per step where its renders are cut.

    Args:
        episodes: The rollouts the targets were computed from.
        rows: Their targets; steps whose (state, action) has no row (``min_visits``) are left out.
        config: The targets' settings (which steps of an expert prefix are targets).
        token_ids: Renders contexts to model input ids (:meth:`ProcessRewardModel.token_ids`).
        once: Read each (state, action) at its first step only, weight 1: every row counted once, as validation
            metrics count them (the later steps still read it in their history).

    Example:
        >>> from prm_gym.rollout import Episode
        >>> from prm_gym.prm.targets import compute_targets
        >>> won = Episode.from_actions("task", ["intro", "here"], ["go", "take"], won=True)
        >>> lost = Episode.from_actions("task", ["intro", "here"], ["go", "drop"], won=False)
        >>> def lengths(contexts):  # a toy tokenizer, append-only as the renderer is: one token per action
        ...     return [[len(action) for _, action in c.history] + [len(c.action)] for c in contexts]
        >>> items = episode_items([won, lost], compute_targets([won, lost]), TargetsConfig(), lengths)
        >>> [(item.token_ids, item.positions, item.q, item.weights) for item in items]
        [([2, 4], [0, 1], [0.5, 1.0], [0.5, 1.0]), ([2, 4], [0, 1], [0.5, 0.0], [0.5, 1.0])]
    """
    by_key = {row.key: row for row in rows}
    episodes = list(episodes)
    kept = [[step for _, step in target_steps(episode, config) if step.context.key in by_key] for episode in episodes]
    if once:
        seen: set[str] = set()
        for steps in kept:
            steps[:] = [step for step in steps if step.context.key not in seen]
            seen.update(step.context.key for step in steps)
    occurrences = Counter(step.context.key for steps in kept for step in steps)
    items = []
    for steps in kept:
        if not steps:
            continue
        ids = token_ids([step.context for step in steps])
        labels = [by_key[step.context.key] for step in steps]
        q = [row.q for row in labels]
        success = [float(row.success) for row in labels]
        weights = [1.0 / occurrences[step.context.key] for step in steps]
        game = steps[0].context.game_file
        keys = [step.context.key for step in steps]
        whole = ids[-1]
        if all(whole[: len(turn)] == turn for turn in ids):
            items.append(EpisodeItem(whole, [len(turn) - 1 for turn in ids], q, success, weights, game, keys))
        else:
            items += [EpisodeItem(turn, [len(turn) - 1], [q[i]], [success[i]], [weights[i]], game, [keys[i]])
                      for i, turn in enumerate(ids)]  # fmt: skip
    return items
