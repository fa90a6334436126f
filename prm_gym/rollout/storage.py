"""The episodes folder: how played episodes are stored on disk, read back, resumed, repaired and exported.

Evaluation and rollout collection write one format, through the one episode runner
(:mod:`prm_gym.rollout.runner`). An episodes folder (the run's ``output_dir``) holds:

- ``config.json``: ``run`` (``"eval"`` or ``"collect"``), ``config`` (the run's config, agent settings included),
  ``agent`` (the agent's name) and ``prm_gym_version``; written once, atomically, when the folder is first used.
- ``episodes.jsonl``: one row per step, with the columns :data:`ROW_COLUMNS`: the episode (id, game index, repeat,
  the seeds its env and its agent were reset with, agent, game file, task type), the step ``t``, the context the
  action was taken in (action and reason included), who chose the action (``expert_prefix``: true for the gold
  commands an episode replays before the agent plays on, see :mod:`prm_gym.rollout.runner`), and the env's answer
  (reward, won, done, truncated). An episode's rows are consecutive, from step 0 to its ``done`` step.
- ``.lock``: held by the run writing there, so that two runs do not append to one file at once.

A row holds the context's fields except the history: each row would repeat all earlier turns, O(T^2) text per
episode. :func:`load_episodes` rebuilds every context with :meth:`Context.from_reset` / ``propose`` /
``advance``, as it was built during play. The file is plain JSON lines, so it is a Hugging Face dataset as it is
(``datasets.load_dataset("json", data_files=...)``); :func:`episodes_dataset` does that, and
:func:`export_parquet` writes a Parquet copy beside it.

Resume and repair: a group of episodes' rows are appended in one write, flushed and fsynced, so an interruption
loses at most the group being written. A rerun with the same folder and config (:func:`prepare_folder`) checks
``config.json`` and the games, cuts a partial write off (an incomplete last line, or the rows of an episode
without its ``done`` step) and returns the ids of the episodes already there, so that only the missing ones are
played. :func:`load_episodes` refuses such a partial write rather than repair it: it only reads.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import prm_gym
from prm_gym.io import (
    append_jsonl,
    atomic_write_text,
    config_differences,
    read_json_object,
    read_jsonl,
    write_parquet,
)
from prm_gym.prm.context import Context

if TYPE_CHECKING:
    import datasets

__all__ = [
    "Episode",
    "Step",
    "append_episodes",
    "episodes_dataset",
    "export_parquet",
    "game_key",
    "load_episodes",
    "load_run_config",
    "prepare_folder",
]

logger = logging.getLogger(__name__)

#: Files of an episodes folder (the lock is held by the run writing there).
EPISODES_FILE, CONFIG_FILE, PARQUET_FILE = "episodes.jsonl", "config.json", "episodes.parquet"
#: Columns of an ``episodes.jsonl`` row: the episode, the step, the context (no history), who chose the action,
#: the env's answer.
ROW_COLUMNS = (
    "episode_id", "game_index", "repeat", "env_seed", "seed", "agent", "game_file", "task_type", "t",
    "task", "observation", "admissible_commands", "action", "reason", "expert_prefix",
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
    #: Whether the action is a gold command the episode replayed before the agent played (an expert prefix).
    expert_prefix: bool = False


@dataclass(frozen=True)
class Episode:
    """A played episode: its steps, and which game, repeat, agent and seeds made it."""

    #: "<game index>:<repeat>".
    episode_id: str
    steps: tuple[Step, ...]
    game_index: int = 0
    repeat: int = 0
    game_file: str | None = None
    task_type: str = ""
    agent: str = ""
    #: The seed the agent was reset with (shared by the episodes played with it in one lockstep group).
    seed: int | None = None
    #: The seed the episode's env was reset with.
    env_seed: int | None = None

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
    def prefix_length(self) -> int:
        """How many gold commands the episode replayed before the agent played (0: it played from the start)."""
        return sum(step.expert_prefix for step in self.steps)

    @property
    def contexts(self) -> list[Context]:
        """The context of every step, with its action."""
        return [step.context for step in self.steps]

    @property
    def actions(self) -> list[str]:
        """The commands sent, in order."""
        return [str(step.context.action) for step in self.steps]

    @property
    def reasons(self) -> list[str | None]:
        """The agent's reason for each command (``None`` where it gave none)."""
        return [step.context.reason for step in self.steps]

    @classmethod
    def from_actions(
        cls, task: str, observations: Sequence[str], actions: Sequence[str], won: bool, episode_id: str = "0:0"
    ) -> Episode:
        """Build an episode by hand: ``observations[t]`` is what the agent saw before sending ``actions[t]``.

        Example:
            >>> episode = Episode.from_actions("task", ["intro", "here"], ["go", "take"], won=True)
            >>> episode.won, episode.actions, episode.steps[1].context.history
            (True, ['go', 'take'], (('intro', 'go'),))
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


def load_episodes(path: str | os.PathLike[str]) -> list[Episode]:
    """Read the episodes of an episodes folder, ordered by (game, repeat), every context rebuilt in full.

    Raises:
        FileNotFoundError: when the folder or its ``episodes.jsonl`` does not exist.
        ValueError: when the file is empty, a row is malformed or lacks columns (the line is named), or the last
            episode was cut short (rerun with the same config to finish it).
    """
    file = _episodes_file(path)
    groups, leftover = _group_episodes(read_jsonl(file), file)
    if leftover:
        raise ValueError(f"{file} ends with an episode cut short: rerun with the same config to finish it.")
    if not groups:
        raise ValueError(f"{file} is empty: it holds no episodes.")
    episodes = []
    for rows in groups:
        first, last = rows[0], rows[-1]
        steps = [
            Step(
                context,
                float(row["reward"]),
                bool(row["won"]),
                bool(row["done"]),
                bool(row["truncated"]),
                bool(row["expert_prefix"]),
            )
            for context, row in zip(_contexts(rows), rows, strict=True)
        ]
        episodes.append(Episode(
            first["episode_id"], tuple(steps), int(first["game_index"]), int(first["repeat"]), last["game_file"],
            first["task_type"], first["agent"], first["seed"], first["env_seed"],
        ))  # fmt: skip
    return sorted(episodes, key=lambda episode: (episode.game_index, episode.repeat))


def load_run_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return an episodes folder's ``config.json``: ``run``, ``config`` (the run's settings), ``agent``, version.

    Raises:
        FileNotFoundError: when it does not exist.
        ValueError: when it is not such a JSON object.
    """
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"No episodes at {path}: {file} does not exist (`prm-gym collect` or `eval` writes it)."
        )
    recorded = read_json_object(file, "Write the run into a new output_dir.")
    if not isinstance(recorded.get("config"), dict) or not isinstance(recorded.get("run"), str):
        raise ValueError(f"{file} is not an episodes folder's config: it lacks `run` or `config`.")
    return recorded


def episodes_dataset(path: str | os.PathLike[str]) -> datasets.Dataset:
    """Return an episodes folder's step rows as a Hugging Face ``datasets.Dataset`` (one row per step).

    Filter, map or ``push_to_hub`` it as any dataset; :func:`load_episodes` gives the same steps as
    :class:`Episode` objects with their history.

    Raises:
        ImportError: without the ``datasets`` package (the ``llm`` extra).
        FileNotFoundError: when the folder holds no ``episodes.jsonl``.
    """
    try:
        import datasets
    except ImportError as error:
        raise ImportError("episodes_dataset needs `datasets`: pip install 'prm-gym[llm]'") from error
    file = _episodes_file(path)
    return datasets.Dataset.from_list(read_jsonl(file))


def export_parquet(path: str | os.PathLike[str]) -> Path:
    """Write the folder's step rows to ``episodes.parquet`` beside ``episodes.jsonl`` (atomically); return it.

    Only whole episodes are exported (a partial write is refused, as :func:`load_episodes` does).

    Raises:
        ImportError: without ``pyarrow`` (installed with the ``llm`` extra's ``datasets``).
        FileNotFoundError: when the folder holds no ``episodes.jsonl``.
        ValueError: when it is empty or ends with an episode cut short.
    """
    file = _episodes_file(path)
    groups, leftover = _group_episodes(read_jsonl(file), file)
    if leftover:
        raise ValueError(f"{file} ends with an episode cut short: rerun with the same config to finish it.")
    return write_parquet(Path(path) / PARQUET_FILE, [row for rows in groups for row in rows])


def prepare_folder(
    folder: Path,
    run: str,
    settings: Mapping[str, Any],
    agent: str,
    games: Sequence[str | os.PathLike[str]],
    *,
    defaults: Mapping[str, Any],
    ignored: Collection[str],
) -> set[str]:
    """Check that ``folder`` holds this run (or nothing yet); cut off a partial write; return finished ids.

    Args:
        folder: The episodes folder (existing).
        run: What writes there: ``"eval"`` or ``"collect"``.
        settings: The run's settings, recorded as ``config.json``'s ``config`` on first use.
        agent: The agent's name, recorded beside them.
        games: The run's games, by game index: every recorded episode must have been played on its game.
        defaults: Default settings, for fields added since the folder was written (they play as before).
        ignored: Settings that may differ from the recorded ones (how and where episodes are played, not which).

    Raises:
        ValueError: when the folder holds another run (each differing setting is named, with both values), or
            episodes of other games, ``episodes.jsonl`` without ``config.json``, or damaged rows.
    """
    file = folder / EPISODES_FILE
    remedy = "choose another output_dir, or the same settings to resume it"
    if (folder / CONFIG_FILE).exists():
        recorded = load_run_config(folder)
        differences = config_differences({**defaults, **recorded["config"]}, settings, ignored=ignored)
        if recorded["run"] != run:
            differences.insert(0, f"run: {recorded['run']!r} there, {run!r} here")
        if recorded.get("agent") != agent:
            differences.append(f"agent name: {recorded.get('agent')!r} there, {agent!r} here")
        if differences:
            raise ValueError(f"{folder} holds another run ({'; '.join(differences)}): {remedy}.")
    elif file.exists():
        raise ValueError(f"{file} exists without {CONFIG_FILE}: it was not written by prm-gym; {remedy}.")
    else:
        identity = {"run": run, "config": settings, "agent": agent, "prm_gym_version": prm_gym.__version__}
        atomic_write_text(folder / CONFIG_FILE, json.dumps(identity, indent=2) + "\n")
    if not file.exists():
        return set()
    groups, leftover = _group_episodes(read_jsonl(file, repair=True), file)
    if leftover:
        _keep_lines(file, sum(len(rows) for rows in groups))
        logger.warning("%s: dropped %d rows of an episode whose write was cut short.", file, leftover)
    for rows in groups:
        index, played = rows[0]["game_index"], rows[-1]["game_file"]
        if not 0 <= index < len(games) or game_key(played) != game_key(games[index]):
            here = games[index] if 0 <= index < len(games) else "not in this run"
            raise ValueError(
                f"{file}: episode {rows[0]['episode_id']!r} was played on {played}, but game {index} is {here} "
                f"here: the games differ; {remedy}."
            )
    return {rows[0]["episode_id"] for rows in groups}


def game_key(game_file: str | os.PathLike[str] | None) -> tuple[str, ...]:
    """Name a game independently of where the data folder is: its task folder, trial and file.

    Example:
        >>> game_key("/data/json_2.1.1/valid_seen/look_at_obj-1/trial_T2019/game.tw-pddl")
        ('look_at_obj-1', 'trial_T2019', 'game.tw-pddl')
    """
    return Path(game_file or "").parts[-3:]


def append_episodes(folder: Path, episodes: Iterable[Episode]) -> None:
    """Append ended episodes' rows to the folder's ``episodes.jsonl``, in one write, flushed and fsynced."""
    append_jsonl(folder / EPISODES_FILE, [row for episode in episodes for row in _episode_rows(episode)])


def _episodes_file(path: str | os.PathLike[str]) -> Path:
    file = Path(path) / EPISODES_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"No episodes at {path}: {file} does not exist (`prm-gym collect` or `eval --output-dir` writes it)."
        )
    return file


def _episode_rows(episode: Episode) -> list[dict[str, Any]]:
    """Return an episode's ``episodes.jsonl`` rows (:data:`ROW_COLUMNS`)."""
    meta = {
        "episode_id": episode.episode_id, "game_index": episode.game_index, "repeat": episode.repeat,
        "env_seed": episode.env_seed, "seed": episode.seed, "agent": episode.agent, "game_file": episode.game_file,
        "task_type": episode.task_type,
    }  # fmt: skip
    rows = []
    for t, step in enumerate(episode.steps):
        context = {key: value for key, value in step.context.to_dict().items() if key != "history"}
        outcome = {"reward": step.reward, "won": step.won, "done": step.done, "truncated": step.truncated}
        rows.append({**meta, "t": t, **context, "expert_prefix": step.expert_prefix, **outcome})
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
            raise ValueError(
                f"Line {number} of {file} lacks the columns {missing} (written by another prm-gym version?): collect "
                "the episodes again into a new output_dir."
            )
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
