"""The rollouts folder: how played episodes are stored on disk, read back, resumed and repaired.

A rollouts folder (a collection's ``output_dir``) holds:

- ``config.json``: ``collect`` (the :class:`~prm_gym.rollout.collect.CollectConfig` settings), ``agent`` (the
  agent's name) and ``prm_gym_version``; written once, atomically, when the folder is first used.
- ``rollouts.jsonl``: one row per step, with the columns :data:`ROW_COLUMNS`: the episode (id, game index,
  repeat, seed, agent, game file, task type), the step ``t``, the context the action was taken in, and the env's
  answer (reward, won, done, truncated). An episode's rows are consecutive, from step 0 to its ``done`` step.
- ``.lock``: locked by the collection writing there, so that two collections do not append to one file at once
  and mix their rows.

A row holds the context's fields except the history: each row would repeat all earlier turns, O(T^2) text per
episode. :func:`load_rollouts` rebuilds every context with :meth:`Context.from_reset` / ``propose`` /
``advance``, as it was built during play.

Resume and repair: an episode's rows are appended when it ends, in one write, flushed and fsynced, so an
interruption loses at most the episode being written. A rerun with the same folder and config
(:func:`prepare_folder`) checks ``config.json``, cuts that partial write off (an incomplete last line, or the
rows of an episode without its ``done`` step) and returns the episodes already there, so that only the missing
ones are played. :func:`load_rollouts` refuses such a partial write rather than repair it: it only reads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prm_gym
import prm_gym.io
from prm_gym.io import append_jsonl, atomic_write_text, config_differences, read_json_object, read_jsonl
from prm_gym.prm.context import Context

__all__ = ["Episode", "Step", "load_rollouts", "load_rollouts_config"]

logger = logging.getLogger(__name__)

#: Files of a rollouts folder (the lock is held by the collection writing there).
ROLLOUTS_FILE, CONFIG_FILE, LOCK_FILE = "rollouts.jsonl", "config.json", ".lock"
#: Columns of a ``rollouts.jsonl`` row: the episode, the step, the context (no history), the env's answer.
ROW_COLUMNS = (
    "episode_id", "game_index", "repeat", "seed", "agent", "game_file", "task_type", "t",
    "task", "observation", "admissible_commands", "action", "reason",
    "reward", "won", "done", "truncated",
)  # fmt: skip


@dataclass(frozen=True)
class Step:
    """One step of an episode: the context the action was taken in (action proposed), and the env's answer."""

    context: Context
    reward: float = 0.0
    #: Whether the game was won after this step.
    won: bool = False
    #: Whether the episode ended at this step (terminated or truncated).
    done: bool = False
    #: Whether it ended here by the step cap.
    truncated: bool = False


@dataclass(frozen=True)
class Episode:
    """A played episode: its steps, and which game, repeat, agent and seed made it."""

    #: "<game index>:<repeat>".
    episode_id: str
    steps: tuple[Step, ...]
    game_index: int = 0
    repeat: int = 0
    game_file: str | None = None
    task_type: str = ""
    agent: str = ""
    #: The seed the agent was reset with.
    seed: int = 0

    def __post_init__(self) -> None:
        """Store the steps as a tuple and check there is at least one."""
        object.__setattr__(self, "steps", tuple(self.steps))
        if not self.steps:
            raise ValueError(f"Episode {self.episode_id!r} has no steps.")

    @property
    def won(self) -> bool:
        """Whether the episode was won."""
        return self.steps[-1].won

    @property
    def contexts(self) -> list[Context]:
        """The context of every step, with its action."""
        return [step.context for step in self.steps]

    @classmethod
    def from_actions(
        cls, task: str, observations: Sequence[str], actions: Sequence[str], won: bool, episode_id: str = "0:0"
    ) -> Episode:
        """Build an episode by hand: ``observations[t]`` is what the agent saw before sending ``actions[t]``.

        Example:
            >>> episode = Episode.from_actions("task", ["intro", "here"], ["go", "take"], won=True)
            >>> episode.won, episode.steps[1].context.history
            (True, (('intro', 'go'),))
        """
        if len(observations) != len(actions):
            raise ValueError(f"Got {len(observations)} observations for {len(actions)} actions; give one per action.")
        turns = [{"task": task, "observation": o, "action": a} for o, a in zip(observations, actions, strict=True)]
        last = len(actions) - 1
        steps = [
            Step(context, float(won and t == last), won and t == last, t == last)
            for t, context in enumerate(_contexts(turns))
        ]
        return cls(episode_id, tuple(steps))


def load_rollouts(path: str | os.PathLike[str]) -> list[Episode]:
    """Read the episodes of a rollouts folder, ordered by (game, repeat), every context rebuilt in full.

    Raises:
        FileNotFoundError: when the folder or its ``rollouts.jsonl`` does not exist.
        ValueError: when the file is empty, a row is malformed or lacks columns (the line is named), or the last
            episode was cut short (rerun the collection with the same config to finish it).
    """
    file = Path(path) / ROLLOUTS_FILE
    if not file.is_file():
        raise FileNotFoundError(f"No rollouts at {path}: {file} does not exist (`prm-gym collect` writes it).")
    groups, leftover = _group_episodes(read_jsonl(file), file)
    if leftover:
        raise ValueError(
            f"{file} ends with an episode cut short: rerun the collection with the same config to finish it."
        )
    if not groups:
        raise ValueError(f"{file} is empty: it holds no episodes.")
    episodes = []
    for rows in groups:
        first, last = rows[0], rows[-1]
        steps = [
            Step(context, float(row["reward"]), bool(row["won"]), bool(row["done"]), bool(row["truncated"]))
            for context, row in zip(_contexts(rows), rows, strict=True)
        ]
        episodes.append(Episode(
            first["episode_id"], tuple(steps), int(first["game_index"]), int(first["repeat"]), last["game_file"],
            first["task_type"], first["agent"], int(first["seed"]),
        ))  # fmt: skip
    return sorted(episodes, key=lambda episode: (episode.game_index, episode.repeat))


def load_rollouts_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return a rollouts folder's ``config.json``: ``collect`` (the :class:`CollectConfig`), ``agent``, version.

    Raises:
        FileNotFoundError: when it does not exist.
        ValueError: when it is not such a JSON object.
    """
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"No rollouts at {path}: {file} does not exist (`prm-gym collect` writes it).")
    recorded = read_json_object(file, "Collect into a new output_dir.")
    if not isinstance(recorded.get("collect"), dict):
        raise ValueError(f"{file} is not a rollouts config: it lacks the `collect` settings.")
    return recorded


def lock_folder(folder: Path) -> contextlib.AbstractContextManager[Path]:
    """Create ``folder`` and hold its lock while writing there: two collections appending would mix their rows.

    Raises:
        ValueError: when another collection holds the lock.
    """
    return prm_gym.io.lock_folder(folder, "collection")


def prepare_folder(folder: Path, settings: dict[str, Any], agent: str, *, ignored: Collection[str]) -> set[str]:
    """Check that ``folder`` holds these rollouts (or none yet); cut off a partial write; return finished ids.

    Args:
        folder: The rollouts folder (existing).
        settings: The collection's settings, recorded as ``config.json``'s ``collect`` on first use.
        agent: The agent's name, recorded beside them.
        ignored: Settings that may differ from the recorded ones (how episodes are played, not which).

    Raises:
        ValueError: when the folder holds rollouts of other settings or another agent, ``rollouts.jsonl`` without
            ``config.json``, or damaged rows.
    """
    identity = {"collect": settings, "agent": agent, "prm_gym_version": prm_gym.__version__}
    file = folder / ROLLOUTS_FILE
    if (folder / CONFIG_FILE).exists():
        recorded = load_rollouts_config(folder)
        differences = config_differences(recorded["collect"], settings, ignored=ignored)
        if recorded.get("agent") != agent:
            differences.append(f"agent: {recorded.get('agent')!r} there, {agent!r} here")
        if differences:
            raise ValueError(
                f"{folder} holds rollouts of another config ({'; '.join(differences)}): choose another "
                "output_dir, or the same config to resume."
            )
    elif file.exists():
        raise ValueError(f"{file} exists without {CONFIG_FILE}: it was not written by `collect_rollouts`.")
    else:
        atomic_write_text(folder / CONFIG_FILE, json.dumps(identity, indent=2) + "\n")
    if not file.exists():
        return set()
    groups, leftover = _group_episodes(read_jsonl(file, repair=True), file)
    if leftover:
        _keep_lines(file, sum(len(rows) for rows in groups))
        logger.warning("%s: dropped %d rows of an episode whose write was cut short.", file, leftover)
    return {rows[0]["episode_id"] for rows in groups}


def append_episode(folder: Path, episode: Episode) -> None:
    """Append an ended episode's rows to the folder's ``rollouts.jsonl``, in one write, flushed and fsynced."""
    append_jsonl(folder / ROLLOUTS_FILE, _episode_rows(episode))


def _episode_rows(episode: Episode) -> list[dict[str, Any]]:
    """Return an episode's ``rollouts.jsonl`` rows (:data:`ROW_COLUMNS`)."""
    meta = {
        "episode_id": episode.episode_id, "game_index": episode.game_index, "repeat": episode.repeat,
        "seed": episode.seed, "agent": episode.agent, "game_file": episode.game_file,
        "task_type": episode.task_type,
    }  # fmt: skip
    rows = []
    for t, step in enumerate(episode.steps):
        context = {key: value for key, value in step.context.to_dict().items() if key != "history"}
        outcome = {"reward": step.reward, "won": step.won, "done": step.done, "truncated": step.truncated}
        rows.append({**meta, "t": t, **context, **outcome})
    return rows


def _contexts(turns: Iterable[Mapping[str, Any]]) -> list[Context]:
    """Rebuild an episode's contexts from its turns (rows with task, observation, commands, action, reason)."""
    contexts: list[Context] = []
    for turn in turns:
        if contexts:
            context = contexts[-1].advance(turn["observation"], turn)
        else:
            context = Context.from_reset(turn["observation"], turn)
        contexts.append(context.propose(turn["action"], turn.get("reason")))
    return contexts


def _group_episodes(rows: Sequence[dict[str, Any]], file: Path) -> tuple[list[list[dict[str, Any]]], int]:
    """Split rows into whole episodes; return them and the number of rows left after the last (a partial write).

    Raises:
        ValueError: on a row without :data:`ROW_COLUMNS`, out of order, or an episode found twice.
    """
    groups: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        missing = [column for column in ROW_COLUMNS if column not in row]
        if missing:
            raise ValueError(f"Line {number} of {file} lacks the columns {missing}.")
        if not current and row["episode_id"] in seen:
            raise ValueError(
                f"Line {number} of {file} starts episode {row['episode_id']!r} again: it is already there."
            )
        expected = (current[0]["episode_id"] if current else row["episode_id"], len(current))
        if (row["episode_id"], row["t"]) != expected:
            raise ValueError(
                f"Line {number} of {file} is step {row['t']} of episode {row['episode_id']!r}; expected step "
                f"{expected[1]} of {expected[0]!r} (an episode's rows are consecutive, from step 0)."
            )
        current.append(row)
        if row["done"]:
            seen.add(row["episode_id"])
            groups.append(current)
            current = []
    return groups, len(current)


def _keep_lines(file: Path, count: int) -> None:
    """Truncate ``file`` after its first ``count`` lines."""
    data = file.read_bytes()
    end = 0
    for _ in range(count):
        end = data.index(b"\n", end) + 1
    with open(file, "r+b") as f:
        f.truncate(end)
        f.flush()
        os.fsync(f.fileno())
