"""Roll a policy out many times on ALFWorld games, on a Gymnasium vector env, into a resumable JSONL dataset.

:func:`collect_rollouts` plays every (game, repeat) episode of a :class:`CollectConfig` (the AgentPRM paper plays
each game 16 times, so that states recur and their Monte-Carlo targets average several rollouts) into an output
folder, whose format, resume and repair :mod:`prm_gym.rollout.storage` describes;
:func:`~prm_gym.rollout.storage.load_rollouts` reads them back as :class:`~prm_gym.rollout.storage.Episode`
objects, from which :mod:`prm_gym.prm.targets` computes Q targets.

Scheduling: the vector env runs with autoreset DISABLED. Episodes wait in one queue, in (game, repeat) order;
a sub-env whose episode ends takes the next one and is reset to its game with a masked reset
(``options={"game": index, "reset_mask": mask}``; Gymnasium passes one ``options`` to every masked sub-env,
so there is one masked reset per distinct game, and sub-envs starting repeats of one game reset together).
Once the queue is empty, a sub-env with nothing left idles: it is reset to its last game and sent the empty
command (answered "Nothing happens.") until the others finish, as the vector env steps all sub-envs at once.
Every episode's agent is reset with its own seed, drawn from (``seed``, game, repeat), so an episode's
content does not depend on the number of sub-envs, sync or async, or which episodes ran before: a resumed
collection ends with the same episodes as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from tqdm.auto import tqdm

from prm_gym.agents import Agent
from prm_gym.envs.alfworld.data import list_games
from prm_gym.envs.alfworld.env import BACKENDS, DEFAULT_BACKEND
from prm_gym.envs.vector import sub_env_info
from prm_gym.prm.context import Context
from prm_gym.rollout.storage import Episode, Step, append_episode, lock_folder, prepare_folder

__all__ = ["CollectConfig", "collect_rollouts"]

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
        >>> from prm_gym.rollout.storage import load_rollouts
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
    with lock_folder(folder):
        settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(CollectConfig)}
        finished = prepare_folder(folder, settings, first_agent.name, ignored=_EXECUTION_FIELDS)
        specs = (_EpisodeSpec.of(config.seed, g, r) for g in range(len(games)) for r in range(config.repeats))
        pending = [spec for spec in specs if spec.episode_id not in finished]
        total, desc = len(games) * config.repeats, f"{first_agent.name} on {config.split}"
        with tqdm(total=total, initial=total - len(pending), desc=desc, unit="episode", disable=not progress) as bar:
            if pending:
                num_envs = min(config.num_envs, len(pending))
                agents = [first_agent, *(agent_factory(index) for index in range(1, num_envs))]
                privileged = tuple(dict.fromkeys(name for agent in agents for name in agent.privileged))
                envs = _make_envs(config, games, num_envs, privileged)
                try:
                    _play(envs, agents, pending, lambda episode: _record(folder, episode, bar))
                except BaseException:
                    envs.close(terminate=True)
                    raise
                envs.close()
    return folder


def _make_envs(config: CollectConfig, games: Sequence[Path], num_envs: int, privileged: Sequence[str]) -> VectorEnv:
    """Return the vector env: ``games`` in order (reset by index), autoreset disabled, the config's step cap.

    ``privileged`` is what the agents ask of ``info`` (:attr:`~prm_gym.agents.base.Agent.privileged`).
    """
    return gym.make_vec(
        "prm_gym/ALFWorld-v0",
        num_envs=num_envs,
        vectorization_mode=config.vectorization,
        vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED},
        game_files=[str(game) for game in games],
        shuffle=False,
        max_episode_steps=config.max_episode_steps,
        backend=config.backend,
        privileged=tuple(privileged),
    )


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


def _record(folder: Path, episode: Episode, bar: tqdm) -> None:
    append_episode(folder, episode)
    bar.update(1)
