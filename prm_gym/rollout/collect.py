"""Roll a policy out many times on ALFWorld games, on a Gymnasium vector env, into a resumable JSONL dataset.

:func:`collect_rollouts` plays every (game, repeat) episode of a :class:`CollectConfig` (the AgentPRM paper plays
each game 16 times, so that states recur and their Monte-Carlo targets average several rollouts) and
:func:`load_rollouts` reads them back as :class:`Episode` objects, from which :mod:`prm_gym.prm.targets` computes
Q targets.

Scheduling: the vector env runs with autoreset DISABLED. Episodes wait in one queue, in (game, repeat) order;
a sub-env whose episode ends takes the next one and is reset to its game with a masked reset
(``options={"game": index, "reset_mask": mask}``; Gymnasium passes one ``options`` to every masked sub-env,
so there is one masked reset per distinct game, and sub-envs starting repeats of one game reset together).
Once the queue is empty, a sub-env with nothing left idles: it is reset to its last game and sent the empty
command (answered "Nothing happens.") until the others finish, as the vector env steps all sub-envs at once.
Every episode's agent is reset with its own seed, drawn from (``seed``, game, repeat), so an episode's
content does not depend on the number of sub-envs, sync or async, or which episodes ran before: a resumed
collection ends with the same episodes as an uninterrupted one.

Storage (an output folder): ``config.json`` (the config, the agent's name, the prm-gym version) and
``rollouts.jsonl``, one row per step (:data:`ROW_COLUMNS`). A row holds the context's fields except the
history (each row would repeat all earlier turns, O(T^2) text per episode); :func:`load_rollouts` rebuilds
every context with :meth:`Context.from_reset` / ``propose`` / ``advance``, as it was built during play. An
episode's rows are appended when it ends, in one write, flushed and fsynced: an interruption loses at most the
episode being written, and a rerun with the same folder and config cuts that partial write off and plays only
the missing episodes. A lock on ``.lock`` keeps two collections from appending to one folder at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from tqdm.auto import tqdm

import prm_gym
from prm_gym.agents import Agent
from prm_gym.envs.alfworld.data import list_games
from prm_gym.envs.alfworld.env import BACKENDS, DEFAULT_BACKEND
from prm_gym.envs.vector import sub_env_info
from prm_gym.io import append_jsonl, atomic_write_text, read_jsonl
from prm_gym.prm.context import Context

__all__ = ["CollectConfig", "Episode", "Step", "collect_rollouts", "load_rollouts", "load_rollouts_config"]

logger = logging.getLogger(__name__)

#: Files of a rollouts folder (the lock is held by the collection writing there).
ROLLOUTS_FILE, CONFIG_FILE, LOCK_FILE = "rollouts.jsonl", "config.json", ".lock"
#: Columns of a ``rollouts.jsonl`` row: the episode, the step, the context (no history), the env's answer.
ROW_COLUMNS = (
    "episode_id", "game_index", "repeat", "seed", "agent", "game_file", "task_type", "t",
    "task", "observation", "admissible_commands", "action", "reason",
    "reward", "won", "done", "truncated",
)  # fmt: skip
#: CollectConfig fields that say how episodes are played, not which: a folder resumes whatever they are.
_EXECUTION_FIELDS = ("num_envs", "vectorization", "output_dir")
#: What an idle sub-env is sent (an empty command: "Nothing happens.").
_IDLE_ACTION = ""


@dataclass
class CollectConfig:
    """Which episodes to roll out, how, and where to write them."""

    #: ALFWorld split: train (the paper's rollouts), valid_seen, valid_unseen, valid_train, or the bundled tiny.
    split: str = "train"
    #: Task types to keep (ids 1-6, names, or labels such as Pick2); empty keeps all.
    task_types: tuple[str, ...] = ()
    #: Play only the first N games of the split (all when unset).
    num_games: int | None = None
    #: Episodes per game (the paper's 16, so that states recur).
    repeats: int = 16
    #: Sub-envs of the vector env.
    num_envs: int = 4
    #: "async": sub-envs in their own processes (games played in parallel); "sync": in this process.
    vectorization: Literal["sync", "async"] = "async"
    #: Step cap per episode (the paper's 30).
    max_episode_steps: int = 30
    #: Base seed: the episode of game g, repeat r resets its agent with a seed drawn from (seed, g, r).
    seed: int = 0
    #: Folder holding ALFWorld's ``json_2.1.1/`` (default: $ALFWORLD_DATA, then the cache).
    data_dir: str | None = None
    #: ALFWorld engine: "textworld" (the reference) or "fast" (the same turns, faster).
    backend: str = DEFAULT_BACKEND
    #: Where ``rollouts.jsonl`` and ``config.json`` go; a rerun with the same config resumes there.
    output_dir: str = "runs/rollouts"

    def __post_init__(self) -> None:
        """Check the settings.

        Raises:
            ValueError: on a count below 1, or an unknown vectorization or backend.
        """
        for name in ("repeats", "num_envs", "max_episode_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` should be at least 1. Received {getattr(self, name)}.")
        if self.num_games is not None and self.num_games < 1:
            raise ValueError(f"`num_games` should be at least 1 (or unset for all). Received {self.num_games}.")
        if self.vectorization not in ("sync", "async"):
            raise ValueError(f"`vectorization` should be 'sync' or 'async'. Received {self.vectorization!r}.")
        if self.backend not in BACKENDS:
            raise ValueError(f"`backend` should be one of {BACKENDS}. Received {self.backend!r}.")


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


def collect_rollouts(agent_factory: Callable[[int], Agent], config: CollectConfig, *, progress: bool = True) -> Path:
    """Play every (game, repeat) episode of ``config`` not yet in its output folder; return the folder.

    Args:
        agent_factory: ``agent_factory(env_index)`` builds the agent of sub-env ``env_index``; it is reset with
            the episode's seed at each episode's start.
        config: The episodes, the vector env and the output folder.
        progress: Show a progress bar over episodes.

    Raises:
        ValueError: when the folder holds rollouts of another config or agent, or damaged rows.

    Example:
        >>> import tempfile
        >>> from prm_gym.agents import WalkthroughAgent
        >>> config = CollectConfig(split="tiny", num_games=1, repeats=2, num_envs=1, vectorization="sync",
        ...                        output_dir=tempfile.mkdtemp())
        >>> episodes = load_rollouts(collect_rollouts(lambda i: WalkthroughAgent(), config, progress=False))
        >>> [(episode.episode_id, episode.won) for episode in episodes]
        [('0:0', True), ('0:1', True)]
    """
    games = list_games(config.split, data_dir=config.data_dir, task_types=config.task_types or None)
    games = games[: config.num_games]
    first_agent = agent_factory(0)
    folder = Path(config.output_dir)
    with _exclusive(folder):
        finished = _prepare_folder(folder, config, first_agent.name)
        specs = (_EpisodeSpec.of(config.seed, g, r) for g in range(len(games)) for r in range(config.repeats))
        pending = [spec for spec in specs if spec.episode_id not in finished]
        total, desc = len(games) * config.repeats, f"{first_agent.name} on {config.split}"
        with tqdm(total=total, initial=total - len(pending), desc=desc, unit="episode", disable=not progress) as bar:
            if pending:
                num_envs = min(config.num_envs, len(pending))
                agents = [first_agent, *(agent_factory(index) for index in range(1, num_envs))]
                envs = _make_envs(config, games, num_envs)
                try:
                    _play(envs, agents, pending, lambda episode: _record(folder / ROLLOUTS_FILE, episode, bar))
                except BaseException:
                    envs.close(terminate=True)
                    raise
                envs.close()
    return folder


def _make_envs(config: CollectConfig, games: Sequence[Path], num_envs: int) -> VectorEnv:
    """Return the vector env: ``games`` in order (reset by index), autoreset disabled, the config's step cap."""
    return gym.make_vec(
        "prm_gym/ALFWorld-v0",
        num_envs=num_envs,
        vectorization_mode=config.vectorization,
        vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED},
        game_files=[str(game) for game in games],
        shuffle=False,
        max_episode_steps=config.max_episode_steps,
        backend=config.backend,
    )


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Hold the folder's lock while collecting: two collections appending to one file would mix their rows."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{folder} is being written by another collection; wait for it to end.") from None
        yield


@dataclass(frozen=True)
class _EpisodeSpec:
    episode_id: str
    game_index: int
    repeat: int
    seed: int

    @classmethod
    def of(cls, base_seed: int, game_index: int, repeat: int) -> _EpisodeSpec:
        seed = int(np.random.SeedSequence([base_seed, game_index, repeat]).generate_state(1)[0])
        return cls(f"{game_index}:{repeat}", game_index, repeat, seed)


@dataclass
class _Running:
    """An episode in play on one sub-env."""

    spec: _EpisodeSpec
    agent: Agent
    context: Context
    task_type: str
    steps: list[Step] = dataclasses.field(default_factory=list)


def _play(
    envs: VectorEnv, agents: Sequence[Agent], pending: Iterable[_EpisodeSpec], record: Callable[[Episode], None]
) -> None:
    """Play the pending episodes on the sub-envs (scheduled as the module's docstring says), recording each."""
    queue = deque(pending)
    running: list[_Running | None] = [None] * envs.num_envs
    last_game: dict[int, int] = {}

    def start(indices: Sequence[int]) -> None:
        specs = {i: queue.popleft() for i in indices if queue}
        if not specs and all(episode is None for episode in running):
            return  # nothing left to play anywhere: no sub-env needs resetting
        last_game.update({i: spec.game_index for i, spec in specs.items()})
        for i, (observation, info) in _reset(envs, {i: last_game[i] for i in indices}).items():
            if i in specs:
                running[i] = _Running(specs[i], agents[i], Context.from_reset(observation, info), info["task_type"])
                agents[i].reset(seed=specs[i].seed)

    start(list(range(envs.num_envs)))
    while any(episode is not None for episode in running):
        actions = _decide(running)
        observations, rewards, terminations, truncations, infos = envs.step(tuple(actions))
        ended = [i for i in range(envs.num_envs) if terminations[i] or truncations[i]]
        for i, episode in enumerate(running):
            if episode is None:
                continue
            info = sub_env_info(infos, i)
            done = i in ended
            episode.steps.append(
                Step(episode.context, float(rewards[i]), bool(info["won"]), done, bool(truncations[i]))
            )
            if not done:
                episode.context = episode.context.advance(observations[i], info)
                continue
            running[i] = None
            record(_finish(episode))
        if ended:
            start(ended)


def _decide(running: Sequence[_Running | None]) -> list[str]:
    """Ask each sub-env's agent for its action (the one place agents are called); idle sub-envs get a no-op."""
    actions = []
    for episode in running:
        if episode is None:
            actions.append(_IDLE_ACTION)
            continue
        (decision,) = episode.agent.decide([episode.context])
        episode.context = episode.context.propose(decision.action, decision.reason)
        actions.append(decision.action)
    return actions


def _reset(envs: VectorEnv, games: Mapping[int, int]) -> dict[int, tuple[str, dict[str, Any]]]:
    """Reset sub-envs to their games (sub-env index -> game index): one masked reset per distinct game."""
    results = {}
    for game in sorted(set(games.values())):
        mask = np.array([games.get(i) == game for i in range(envs.num_envs)], dtype=np.bool_)
        observations, infos = envs.reset(options={"game": game, "reset_mask": mask})
        results.update({int(i): (observations[i], sub_env_info(infos, int(i))) for i in np.flatnonzero(mask)})
    return results


def _finish(episode: _Running) -> Episode:
    spec = episode.spec
    return Episode(
        spec.episode_id, tuple(episode.steps), spec.game_index, spec.repeat, episode.context.game_file,
        episode.task_type, episode.agent.name, spec.seed,
    )  # fmt: skip


def _record(file: Path, episode: Episode, bar: tqdm) -> None:
    append_jsonl(file, _episode_rows(episode))
    bar.update(1)


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


def _prepare_folder(folder: Path, config: CollectConfig, agent: str) -> set[str]:
    """Check that ``folder`` holds these rollouts (or none yet); cut off a partial write; return finished ids."""
    identity = {
        "collect": {f.name: getattr(config, f.name) for f in dataclasses.fields(CollectConfig)},
        "agent": agent,
        "prm_gym_version": prm_gym.__version__,
    }
    file = folder / ROLLOUTS_FILE
    if (folder / CONFIG_FILE).exists():
        recorded = load_rollouts_config(folder)
        ours = json.loads(json.dumps(identity))
        differences = [
            f"{name}: {recorded['collect'].get(name)!r} there, {value!r} here"
            for name, value in ours["collect"].items()
            if name not in _EXECUTION_FIELDS and recorded["collect"].get(name) != value
        ]
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
    try:
        recorded = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{file} is not valid JSON ({error.msg}).") from None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("collect"), dict):
        raise ValueError(f"{file} is not a rollouts config: it lacks the `collect` settings.")
    return recorded
