"""The one context type: a turn of a text game as a reward model scores it and a policy reads it.

A :class:`Context` is the paper's state (task + history of (observation, action) + current observation) plus
the admissible commands and, when a reward model is asked, the proposed action (and the agent's reason).
Training rows, scoring calls, the wrappers and the LLM agents all build it the same way, through
:meth:`Context.from_reset` and :meth:`Context.advance`, so train and test inputs cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Context"]


@dataclass(frozen=True)
class Context:
    """Task, history, current observation, admissible commands and (optionally) a proposed action.

    Example:
        >>> info = {"task": "put a mug in the sink.", "admissible_commands": ["go to sink 1", "look"]}
        >>> ctx = Context.from_reset("You are in a room. Your task is to: put a mug in the sink.", info)
        >>> ctx = ctx.propose("go to sink 1", reason="The mug may be there.")
        >>> nxt = ctx.advance("You arrive at sink 1.", {"admissible_commands": ["look"]})
        >>> nxt.history[0][1], nxt.observation, nxt.action
        ('go to sink 1', 'You arrive at sink 1.', None)
        >>> ctx.state_key == ctx.propose("look").state_key != ctx.key
        True
    """

    #: The goal sentence ("put a clean mug in coffeemachine.").
    task: str
    #: Earlier turns, oldest first: the observation the agent saw and the command it sent.
    history: tuple[tuple[str, str], ...] = ()
    #: The text the agent sees now (at the first turn, the game's intro).
    observation: str = ""
    #: The commands the game accepts now, sorted.
    admissible_commands: tuple[str, ...] = ()
    #: The command proposed at this state; ``None`` when a policy is asked what to do.
    action: str | None = None
    #: The agent's reason for ``action``, when it gave one (reward models may read it; it is not part of the key).
    reason: str | None = None
    #: The game this state belongs to (``info["game_file"]``): provenance for agents and estimators that replay
    #: or plan in the game; never rendered, not part of the keys.
    game_file: str | None = None

    def __post_init__(self) -> None:
        """Store sequences as tuples so a context is hashable and immutable whatever it was given."""
        object.__setattr__(self, "history", tuple((str(o), str(a)) for o, a in self.history))
        object.__setattr__(self, "admissible_commands", tuple(self.admissible_commands))

    @classmethod
    def from_reset(cls, observation: str, info: Mapping[str, Any]) -> Context:
        """Return the first turn of an episode, from what ``env.reset()`` returned."""
        return cls(
            task=str(info.get("task") or ""),
            observation=observation,
            admissible_commands=tuple(info.get("admissible_commands") or ()),
            game_file=info.get("game_file"),
        )

    def propose(self, action: str, reason: str | None = None) -> Context:
        """Return this state with ``action`` proposed (and the agent's ``reason``)."""
        return dataclasses.replace(self, action=action, reason=reason)

    def advance(self, observation: str, info: Mapping[str, Any]) -> Context:
        """Return the next turn: the proposed action was sent and the env answered ``observation``, ``info``."""
        if self.action is None:
            raise ValueError("Cannot advance a context with no action: call `propose(action)` first.")
        return Context(
            task=self.task,
            history=(*self.history, (self.observation, self.action)),
            observation=observation,
            admissible_commands=tuple(info.get("admissible_commands") or ()),
            game_file=self.game_file,
        )

    @property
    def state_key(self) -> str:
        """A stable hash of the state (task, history, observation): equal states share it across runs."""
        return _digest([self.task, [list(turn) for turn in self.history], self.observation])

    @property
    def key(self) -> str:
        """A stable hash of (state, action), the key of Monte-Carlo Q targets."""
        return _digest([self.state_key, self.action])

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as JSON-friendly lists and strings (one dataset row's context columns)."""
        return {
            "task": self.task,
            "history": [list(turn) for turn in self.history],
            "observation": self.observation,
            "admissible_commands": list(self.admissible_commands),
            "action": self.action,
            "reason": self.reason,
            "game_file": self.game_file,
        }

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> Context:
        """Rebuild a context from :meth:`to_dict`'s fields (other keys of a dataset row are ignored).

        Raises:
            ValueError: when ``row`` lacks ``task`` or ``observation``, or its history is not (observation,
                action) pairs.
        """
        missing = [name for name in ("task", "observation") if name not in row]
        if missing:
            raise ValueError(f"A context row needs the fields {missing}; it has {sorted(row)}.")
        history: Sequence[Any] = row.get("history") or ()
        if any(len(turn) != 2 for turn in history):
            raise ValueError("A context's `history` must be a list of [observation, action] pairs.")
        return cls(
            task=row["task"],
            history=tuple((turn[0], turn[1]) for turn in history),
            observation=row["observation"],
            admissible_commands=tuple(row.get("admissible_commands") or ()),
            action=row.get("action"),
            reason=row.get("reason"),
            game_file=row.get("game_file"),
        )


def _digest(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
