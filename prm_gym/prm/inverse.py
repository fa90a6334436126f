"""InversePRM's data: expert and policy transitions, each with the action the policy takes next.

InversePRM (Choudhury 2025, "Process Reward Models for LLM Agents", Section 3) learns a process reward from
demonstrations alone: no outcome, no Monte-Carlo return. Its Q(s, a) (the PRM's one logit) is trained as a
classifier of transitions (s, a, s'): expert transitions (from demonstrations, label 1) against transitions of
the current and past policies (label 0), with the classifier's logit

    f(s, a, s') = Q(s, a) - gamma * Q(s', a'),   a' ~ pi_{i-1}(. | s')       (f = Q(s, a) when the episode ends)

and binary cross-entropy with balanced classes (:mod:`prm_gym.prm.inverse_training`). ``Q(s', a')`` is a
one-sample estimate of V(s') under the current policy, so f is the inverse Bellman reading of Q: the reward
r(s, a) = Q(s, a) - gamma * V(s') it recovers is high where the expert goes and low where the policy strays
(as in IQ-Learn, Garg et al. 2021; the ``recovered`` mode of
:class:`~prm_gym.wrappers.process_reward.ProcessRewardWrapper` emits it). Best-of-N ranks the candidate actions
of a state by Q(s, a) itself.

A :class:`Transition` holds the context of (s, a) and, unless the episode ended with ``a``, the context of
(s', a'). :func:`episode_transitions` cuts an episode into transitions (its next step's context is s', with the
action the episode took there); :func:`select_transitions` picks the training set: expert transitions of the
games the policy played (so that the classifier tells actions apart, not games), policy transitions, each class
capped by a seeded sample; :func:`resample_next_actions` replaces a' by the current policy's choice wherever the
recorded next action is not the current policy's own (every expert transition, and past policies' ones).
:func:`save_transitions` / :func:`load_transitions` keep them in a folder (``transitions.jsonl``, one
self-contained row per transition, and ``config.json``).
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from prm_gym.io import read_folder_config, read_rows_folder, write_rows_folder
from prm_gym.prm.context import Context
from prm_gym.prm.targets import EpisodeRecord

if TYPE_CHECKING:
    from prm_gym.agents.base import Agent

__all__ = [
    "Transition",
    "TransitionsConfig",
    "episode_transitions",
    "load_transitions",
    "load_transitions_config",
    "resample_next_actions",
    "save_transitions",
    "select_transitions",
]

#: Files of a transitions folder.
TRANSITIONS_FILE = "transitions.jsonl"


@dataclass
class TransitionsConfig:
    """Which transitions an InversePRM is trained on."""

    #: Keep only the demonstrations of games the policy played (by game file), when any match: the classifier
    #: then compares the expert's and the policy's actions in the same games, rather than learning which games
    #: the expert played. Demonstrations without game files are kept whatever this says.
    match_games: bool = True
    #: At most this many expert transitions (a seeded sample; unset: all).
    max_expert_transitions: int | None = 2000
    #: At most this many policy transitions (a seeded sample; unset: all).
    max_policy_transitions: int | None = 2000
    #: Seed of the samples.
    seed: int = 0

    def __post_init__(self) -> None:
        """Check the caps, naming the bad value."""
        for name in ("max_expert_transitions", "max_policy_transitions"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"`{name}` should be at least 1 (or unset for all). Received {value}.")


@dataclass(frozen=True)
class Transition:
    """One transition (s, a, s') and the policy's next action a': the contexts of (s, a) and (s', a').

    Example:
        >>> start = Context("put a mug in the sink", observation="You are in a kitchen.")
        >>> t = Transition(start.propose("go to sink 1"), None, expert=True, source="demonstrations")
        >>> t.final, Transition.from_dict(t.to_dict()) == t
        (True, True)
    """

    #: The state s with the action a taken in it.
    context: Context
    #: The next state s' with the policy's action a' proposed; None when the episode ended with a.
    next_context: Context | None
    #: Whether a is the expert's (a demonstration's) or a policy's.
    expert: bool
    #: Where it comes from: the demonstrations, or the folder of the rollouts it was cut from.
    source: str

    @property
    def final(self) -> bool:
        """Whether the episode ended with this transition (its logit is Q(s, a) alone)."""
        return self.next_context is None

    @property
    def game_file(self) -> str | None:
        """The game it was played in."""
        return self.context.game_file

    def to_dict(self) -> dict[str, Any]:
        """Return a ``transitions.jsonl`` row: ``expert``, ``source``, ``context`` and ``next`` (or null)."""
        return {
            "expert": self.expert,
            "source": self.source,
            "context": self.context.to_dict(),
            "next": None if self.next_context is None else self.next_context.to_dict(),
        }

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> Transition:
        """Rebuild a transition from :meth:`to_dict`'s output.

        Raises:
            ValueError: when fields are missing or of the wrong type, or a context proposes no action.
        """
        missing = [name for name in ("expert", "source", "context", "next") if name not in row]
        if missing:
            raise ValueError(f"A transition row needs the fields {missing}; it has {sorted(row)}.")
        if not isinstance(row["expert"], bool) or not isinstance(row["context"], Mapping):
            raise ValueError("A transition row's `expert` is true or false and its `context` an object.")
        context = Context.from_dict(row["context"])
        following = None if row["next"] is None else Context.from_dict(row["next"])
        if context.action is None or (following is not None and following.action is None):
            raise ValueError("A transition row's contexts must propose an action (a, and a' in `next`).")
        return cls(context, following, row["expert"], str(row["source"]))


def episode_transitions(episode: EpisodeRecord, *, expert: bool, source: str) -> list[Transition]:
    """Cut an episode into transitions: step t's context is (s, a), step t+1's is (s', a') (none after the last).

    In a policy's episode, the gold commands an expert prefix replayed (``expert_prefix`` steps) are not the
    policy's: they are left out (as transitions, not as next states).

    Example:
        >>> from prm_gym.rollout import Episode
        >>> episode = Episode.from_actions("task", ["intro", "here"], ["go", "take"], won=True)
        >>> [(t.context.action, t.next_context and t.next_context.action) for t in
        ...  episode_transitions(episode, expert=True, source="demos")]
        [('go', 'take'), ('take', None)]
    """
    steps = episode.steps
    transitions = []
    for t, step in enumerate(steps):
        if not expert and step.expert_prefix:
            continue
        if step.context.action is None:
            raise ValueError(f"Step {t} of episode {episode.episode_id!r} has no action: episodes record one.")
        following = steps[t + 1].context if t + 1 < len(steps) else None
        transitions.append(Transition(step.context, following, expert, source))
    return transitions


def select_transitions(
    demonstrations: Iterable[EpisodeRecord],
    policy_episodes: Mapping[str, Iterable[EpisodeRecord]],
    config: TransitionsConfig,
) -> list[Transition]:
    """Return the training transitions: expert ones from ``demonstrations``, policy ones from each rollouts folder.

    Args:
        demonstrations: The expert's episodes.
        policy_episodes: Episodes of the current and past policies, by their source (a rollouts folder's name).
        config: Which demonstrations match the policy's games, and the caps of each class.

    Returns:
        The expert transitions, then the policy ones, each a seeded sample when capped (in episode order).

    Raises:
        ValueError: when either class has no transition.
    """
    policy = [t for source, episodes in policy_episodes.items() for e in episodes
              for t in episode_transitions(e, expert=False, source=source)]  # fmt: skip
    demos = list(demonstrations)
    if config.match_games:
        played = {t.game_file for t in policy if t.game_file}
        matching = [e for e in demos if _game(e) in played or not _game(e)]
        demos = matching or demos
    expert = [t for e in demos for t in episode_transitions(e, expert=True, source="demonstrations")]
    if not expert:
        raise ValueError("No expert transition: the demonstrations have no step.")
    if not policy:
        raise ValueError("No policy transition: the rollouts have no step of the policy's own.")
    rng = random.Random(config.seed)
    return _sample(expert, config.max_expert_transitions, rng) + _sample(policy, config.max_policy_transitions, rng)


def resample_next_actions(
    transitions: Sequence[Transition],
    policy: Agent,
    *,
    keep_source: str | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> list[Transition]:
    """Return ``transitions`` with a' at each next state chosen by ``policy`` (one batched ``decide`` per batch).

    Transitions from ``keep_source`` (the current policy's own rollouts) keep the next action their episode
    took: it is already a sample of the policy at s'. The others (the expert's, past policies') get a fresh one.

    Example:
        >>> from prm_gym.agents import RandomAgent
        >>> start = Context("task", observation="intro", admissible_commands=("go", "look"))
        >>> then = Context("task", history=(("intro", "go"),), observation="here", admissible_commands=("take",))
        >>> expert = Transition(start.propose("go"), then.propose("put"), expert=True, source="demonstrations")
        >>> [t.next_context.action for t in resample_next_actions([expert], RandomAgent(seed=0))]
        ['take']
    """
    todo = [i for i, t in enumerate(transitions) if t.next_context is not None and t.source != keep_source]
    result = list(transitions)
    bar = tqdm(total=len(todo), desc="next actions", unit="state", disable=not progress)
    for start in range(0, len(todo), batch_size):
        rows = todo[start : start + batch_size]
        states = [_state(result[i].next_context) for i in rows]  # type: ignore[arg-type]
        for i, state, decision in zip(rows, states, policy.decide(states), strict=True):
            result[i] = dataclasses.replace(result[i], next_context=state.propose(decision.action, decision.reason))
        bar.update(len(rows))
    bar.close()
    return result


def save_transitions(
    transitions: Sequence[Transition],
    path: str | os.PathLike[str],
    config: TransitionsConfig,
    source: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``transitions.jsonl`` and ``config.json`` (``config`` and where they came from) atomically.

    Raises:
        ValueError: when ``transitions`` is empty.
    """
    if not transitions:
        raise ValueError("No transitions to save.")
    counts = {"expert": sum(t.expert for t in transitions), "policy": sum(not t.expert for t in transitions)}
    meta = {"transitions": dataclasses.asdict(config), "counts": counts, "source": dict(source or {})}
    return write_rows_folder(path, TRANSITIONS_FILE, (t.to_dict() for t in transitions), meta)


def load_transitions(path: str | os.PathLike[str]) -> list[Transition]:
    """Read the transitions :func:`save_transitions` wrote to a folder.

    Raises:
        FileNotFoundError: when the folder or its ``transitions.jsonl`` does not exist.
        ValueError: when the file is empty or a row is malformed (the line is named).
    """
    return read_rows_folder(path, TRANSITIONS_FILE, Transition.from_dict, command="transitions")


def load_transitions_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return a transitions folder's ``config.json``: ``transitions`` (the config), ``counts``, ``source``.

    Raises:
        FileNotFoundError: when it does not exist.
        ValueError: when it is not a JSON object (damaged): the file is named.
    """
    return read_folder_config(path, command="transitions")


def _game(episode: EpisodeRecord) -> str | None:
    return episode.steps[0].context.game_file


def _state(context: Context) -> Context:
    """Return the state of ``context``: its action and reason cleared (what a policy decides in)."""
    return dataclasses.replace(context, action=None, reason=None)


def _sample(transitions: list[Transition], cap: int | None, rng: random.Random) -> list[Transition]:
    """Return a seeded sample of at most ``cap`` transitions, in their original order."""
    if cap is None or len(transitions) <= cap:
        return transitions
    return [transitions[i] for i in sorted(rng.sample(range(len(transitions)), cap))]
