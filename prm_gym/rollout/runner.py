"""The one episode runner: play an agent on ALFWorld games in lockstep groups, into episodes and a resumable folder.

Evaluation (:func:`prm_gym.evaluation.evaluate`) and rollout collection (:func:`prm_gym.rollout.collect_rollouts`)
are views over :func:`run_episodes`: they say which episodes to play (:class:`EpisodeSpec`: a game, a repeat and
the seeds), it plays them and writes them in the format of :mod:`prm_gym.rollout.storage`.

How episodes are played: the specs are cut into consecutive groups of ``num_envs``; a group is played on a
Gymnasium vector env (``sync``: the sub-envs in this process, stepped in lockstep; ``async``: each in its own
process), autoreset disabled. The agent is reset with the group's first agent seed, each sub-env is reset to its
episode's game with the episode's env seed (a masked reset per distinct game: Gymnasium passes one ``options`` to
every masked sub-env), and every turn is ONE :meth:`~prm_gym.agents.Agent.decide` call over the group's unfinished
episodes, so a language model batches its work across games. A sub-env whose episode ended waits, reset to its
game and sent the empty command ("Nothing happens."), until the group ends, as a vector env steps all sub-envs at
once. Each new episode's reset ``info`` goes to :meth:`~prm_gym.agents.Agent.start_episode` (an oracle reads
its walkthrough there; privileged entries the agent did not ask for are left out).

Episodes along the expert trajectory (the AgentPRM paper's reset distribution): an episode whose spec has an
``expert_prefix`` first replays the first k commands of its game's gold walkthrough (:func:`prefix_length`), then
the agent plays on from there, its contexts holding the replayed turns as if it had played them. The replayed
steps are recorded with ``expert_prefix=True``. While a sub-env replays, it steps in lockstep with the others but
is not in the turn's ``decide`` call (no call at all when every live episode replays), so prefixes of different
lengths share a group. The envs hand out the walkthrough only when a spec asks for a prefix
(:func:`privileged_info`).

Why groups: the agent's random stream is consumed by the batched calls, so what an episode looks like depends on
the episodes played beside it. Groups fixed by the spec order make that deterministic: with an output folder, a
group's episodes are appended in one write when it ends, a rerun skips the groups found there and replays any
other group whole, so a resumed run ends with exactly the episodes of an uninterrupted one, stochastic agents
included. ``num_envs`` is therefore part of what defines a run (``vectorization`` is not).

Where groups are played (``executor``): here, one after another on one vector env, or on Ray actors
(:mod:`prm_gym.rollout.ray_executor`, imported only then), each with its own vector env and agent. Either way
:func:`run_episodes` alone decides which groups to play and appends each finished group once, so both executors
write the same folder, and a folder started with one resumes with the other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import typing
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from tqdm.auto import tqdm

from prm_gym.agents.base import Agent
from prm_gym.agents.registry import AgentConfig, make_agent
from prm_gym.envs.alfworld.data import list_games, select_games
from prm_gym.envs.alfworld.env import BACKENDS, DEFAULT_BACKEND
from prm_gym.envs.text_game_env import PRIVILEGED_INFO
from prm_gym.envs.vector import sub_env_info
from prm_gym.io import lock_folder
from prm_gym.prm.context import Context
from prm_gym.rollout.storage import Episode, Step, append_episodes, prepare_folder

__all__ = [
    "EXECUTION_FIELDS",
    "EpisodeSpec",
    "RunConfig",
    "make_envs",
    "make_run_agent",
    "open_run_agent",
    "play_group",
    "prefix_length",
    "privileged_info",
    "run_episodes",
]

logger = logging.getLogger(__name__)

#: Settings that say how or where episodes are played, not which: a folder resumes whatever they are. The games are
#: compared one by one (by task folder, trial and file), so ``data_dir`` may move.
EXECUTION_FIELDS = (
    "output_dir", "data_dir", "device", "vectorization", "hf.max_batch_tokens", "openai.base_url",
    "openai.api_key_env", "openai.timeout_s", "openai.max_retries", "openai.backoff_s", "openai.backoff_factor",
    "openai.backoff_max_s", "openai.max_concurrency", "executor", "ray_address", "ray_actors", "ray_gpus_per_actor",
)  # fmt: skip
#: What a waiting sub-env is sent (an empty command: "Nothing happens.").
_IDLE_ACTION = ""


@dataclass
class RunConfig:
    """Which ALFWorld games to play, how, and where to write the episodes (shared by evaluation and collection)."""

    #: ALFWorld split: train, valid_seen, valid_unseen (the paper's), valid_train, or the bundled tiny.
    split: str = "valid_unseen"
    #: Task types to keep (ids 1-6, names, or labels such as Pick2); empty keeps all.
    task_types: tuple[str, ...] = ()
    #: Play only N games of the split (all when unset), chosen as ``game_selection`` says.
    num_games: int | None = None
    #: How ``num_games`` picks its games: "spread", evenly over the split's sorted list (which groups games by
    #: task type, so every type comes in proportion); "first", the first N (of one or two task types only).
    game_selection: Literal["spread", "first"] = "spread"
    #: Step cap per episode (the paper uses 30).
    max_episode_steps: int = 30
    #: Base seed of the episodes' env and agent seeds.
    seed: int = 0
    #: Games played together, in lockstep, one `decide` call per turn over all of them (LLM agents batch it).
    num_envs: int = 1
    #: "sync": the games' envs in this process; "async": each in its own process (env steps in parallel).
    vectorization: Literal["sync", "async"] = "sync"
    #: ALFWorld engine: "fast" or "textworld" (the reference); both give the same turns.
    backend: str = DEFAULT_BACKEND
    #: Folder holding ALFWorld's ``json_2.1.1/`` (default: $ALFWORLD_DATA, then the cache).
    data_dir: str | None = None
    #: Where episodes.jsonl and config.json go (and resume from); nothing is written without.
    output_dir: str | None = None
    #: Where groups are played: "local" (here) or "ray" (Ray actors, each with its own envs and agent).
    executor: Literal["local", "ray"] = "local"
    #: Ray: the cluster to join ("auto", "ray://head:10001"); without it a local Ray instance starts.
    ray_address: str | None = None
    #: Ray: actors, each with a vector env and an agent (default: one per CPU of the cluster).
    ray_actors: int | None = None
    #: Ray: GPUs each actor reserves for its agent (0.25: four actors share a GPU).
    ray_gpus_per_actor: float = 0.0

    def __post_init__(self) -> None:
        """Check the settings.

        Raises:
            ValueError: on a count below 1, a negative GPU share, or an unknown vectorization, backend or
                executor.
        """
        for name in ("num_envs", "max_episode_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` should be at least 1. Received {getattr(self, name)}.")
        if self.num_games is not None and self.num_games < 1:
            raise ValueError(f"`num_games` should be at least 1 (or unset for all games). Received {self.num_games}.")
        if self.game_selection not in ("spread", "first"):
            raise ValueError(f"`game_selection` should be 'spread' or 'first'. Received {self.game_selection!r}.")
        if self.vectorization not in ("sync", "async"):
            raise ValueError(f"`vectorization` should be 'sync' or 'async'. Received {self.vectorization!r}.")
        if self.backend not in BACKENDS:
            raise ValueError(f"`backend` should be one of {BACKENDS}. Received {self.backend!r}.")
        if self.executor not in ("local", "ray"):
            raise ValueError(f"`executor` should be 'local' or 'ray'. Received {self.executor!r}.")
        if self.ray_actors is not None and self.ray_actors < 1:
            raise ValueError(f"`ray_actors` should be at least 1 (or unset: one per CPU). Received {self.ray_actors}.")
        if self.ray_gpus_per_actor < 0:
            raise ValueError(f"`ray_gpus_per_actor` should be 0 or more. Received {self.ray_gpus_per_actor}.")

    def games(self) -> list[Path]:
        """Return the games the run plays, in order (game index = position)."""
        games = list_games(self.split, data_dir=self.data_dir, task_types=self.task_types or None)
        return select_games(games, self.num_games, self.game_selection)


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode to play: which game (by index in the run's list), which repeat of it, and its seeds."""

    game_index: int
    repeat: int = 0
    #: The seed the episode's env is reset with.
    env_seed: int | None = None
    #: The seed the agent is reset with when the episode is the first of its group.
    agent_seed: int | None = None
    #: Where along the game's gold walkthrough the episode starts, in [0, 1): it first replays the walkthrough's
    #: first :func:`prefix_length` commands; ``None`` (the default) starts at the game's start.
    expert_prefix: float | None = None

    def __post_init__(self) -> None:
        """Check ``expert_prefix``.

        Raises:
            ValueError: when it is outside [0, 1).
        """
        if self.expert_prefix is not None and not 0.0 <= self.expert_prefix < 1.0:
            raise ValueError(f"`expert_prefix` should be in [0, 1) or None. Received {self.expert_prefix}.")

    @property
    def episode_id(self) -> str:
        """``"<game index>:<repeat>"``."""
        return f"{self.game_index}:{self.repeat}"


def make_run_agent(config: RunConfig) -> Agent:
    """Build the agent a run's config names (an evaluation's or a collection's agent settings).

    It is seeded with the run's seed, and a Monte-Carlo estimator's rollouts are capped and played as the run's
    episodes are.
    """
    settings = typing.cast(AgentConfig, config)  # such configs are both AgentConfig and RunConfig
    env_kwargs = {"backend": config.backend}
    return make_agent(settings, seed=config.seed, max_episode_steps=config.max_episode_steps, env_kwargs=env_kwargs)


@contextlib.contextmanager
def open_run_agent(config: RunConfig) -> Generator[Agent, None, None]:
    """:func:`make_run_agent`, closed at the end (an agent's server connections or process pools)."""
    agent = make_run_agent(config)
    try:
        yield agent
    finally:
        close = getattr(agent, "close", None)
        if callable(close):
            close()


def run_episodes(
    agent: Agent,
    config: RunConfig,
    specs: Sequence[EpisodeSpec],
    *,
    run: str,
    progress: bool = True,
    keep: bool = True,
) -> list[Episode]:
    """Play the episodes ``specs`` names in groups of ``config.num_envs`` (see the module) and return them.

    With ``config.output_dir``, the folder is locked while the run writes there, its config and games are
    checked (:func:`~prm_gym.rollout.storage.prepare_folder`), groups whose episodes are all there are not played
    again, and each played group is appended when it ends (with ``executor="ray"``, in the order groups end; an
    episode is never appended twice). The end logs a summary: episodes per second (and groups retried on Ray).

    Args:
        agent: The policy; one instance plays every episode (reset at each group's start).
        config: The games, vector env and output folder; recorded in full in the folder (``config.json``), so
            pass the caller's whole config (agent settings included).
        specs: The episodes, in play order.
        run: What the run is, for the folder's ``config.json``: ``"eval"`` or ``"collect"``.
        progress: Show a progress bar over episodes.
        keep: Return the episodes played (a large collection passes False and reads its folder when needed).

    Returns:
        The episodes played in this call, in spec order (empty when ``keep`` is False); with an output folder,
        :func:`~prm_gym.rollout.storage.load_episodes` reads all of them.

    Raises:
        ValueError: when the folder holds another run, or the agent returns the wrong number of decisions.
        ImportError: ``executor="ray"`` without Ray (the ``ray`` extra).
    """
    games = config.games()
    missing = [spec.game_index for spec in specs if not 0 <= spec.game_index < len(games)]
    if missing:
        raise ValueError(f"Episodes ask for games {missing[:5]}, but the run has {len(games)} games.")
    output = Path(config.output_dir) if config.output_dir is not None else None
    groups = [specs[first : first + config.num_envs] for first in range(0, len(specs), config.num_envs)]
    played: list[Episode] = []
    with contextlib.ExitStack() as stack:
        finished: set[str] = set()
        if output is not None:
            stack.enter_context(lock_folder(output, "run"))
            settings = dataclasses.asdict(config)
            defaults = dataclasses.asdict(type(config)())
            finished = prepare_folder(
                output, run, settings, agent.name, [str(g) for g in games], defaults=defaults, ignored=EXECUTION_FIELDS
            )
        pending = [group for group in groups if any(spec.episode_id not in finished for spec in group)]
        done = len(specs) - sum(len(group) for group in pending)
        desc = f"{agent.name} on {config.split}"
        with tqdm(total=len(specs), initial=done, desc=desc, unit="episode", disable=not progress) as bar:
            if not pending:
                return played
            start, num_envs, count = time.perf_counter(), min(config.num_envs, len(specs)), 0
            retried: list[Sequence[EpisodeSpec]] = []
            privileged = privileged_info(agent, [spec for group in pending for spec in group])
            if config.executor == "ray":
                from prm_gym.rollout.ray_executor import play_on_ray  # Ray: imported only when asked for

                ended = play_on_ray(agent, config, pending, num_envs, privileged, retried=retried.append)
            else:
                ended = _play_here(agent, config, games, pending, num_envs, privileged)
            for episodes in stack.enter_context(contextlib.closing(ended)):
                new = [episode for episode in episodes if episode.episode_id not in finished]
                finished.update(episode.episode_id for episode in new)
                if output is not None:
                    append_episodes(output, new)
                if keep:
                    played += new
                bar.update(len(new))
                count += len(new)
        seconds = time.perf_counter() - start
        retries = f", {len(retried)} groups retried" if config.executor == "ray" else ""
        logger.info("%s: %d episodes in %.1f s (%.2f episodes/s%s)", desc, count, seconds, count / seconds, retries)
    order = {spec.episode_id: index for index, spec in enumerate(specs)}
    return sorted(played, key=lambda episode: order[episode.episode_id])


def prefix_length(position: float, walkthrough_length: int) -> int:
    """Return how many gold commands an episode starting at ``position`` along an n-command walkthrough replays.

    ``1 + floor(position * (n - 1))``: uniform over [1, n - 1] for a uniform ``position`` in [0, 1). At least one
    command, so the episode starts from a state the expert reached (the game's start is the from-start episodes'),
    and at most n - 1, so the policy always has the winning command left to find. A walkthrough of one command or
    none leaves no such state: 0, the episode starts at the game's start.

    Example:
        >>> [prefix_length(position, 5) for position in (0.0, 0.3, 0.99)], prefix_length(0.5, 1)
        ([1, 2, 4], 0)
    """
    return 1 + int(position * (walkthrough_length - 1)) if walkthrough_length > 1 else 0


def privileged_info(agent: Agent, specs: Iterable[EpisodeSpec]) -> tuple[str, ...]:
    """Return the privileged ``info`` entries the envs that play ``specs`` hand out.

    The agent's (:attr:`~prm_gym.agents.base.Agent.privileged`), plus the walkthrough when an episode replays an
    expert prefix (the runner keeps it from an agent that did not ask for it).
    """
    replay = ("walkthrough",) if any(spec.expert_prefix is not None for spec in specs) else ()
    return tuple(dict.fromkeys((*agent.privileged, *replay)))


def _play_here(
    agent: Agent,
    config: RunConfig,
    games: Sequence[Path],
    groups: Sequence[Sequence[EpisodeSpec]],
    num_envs: int,
    privileged: Sequence[str],
) -> Generator[list[Episode], None, None]:
    """Play ``groups`` one after another on one vector env of ``num_envs`` sub-envs (the local executor)."""
    envs = make_envs(config, games, num_envs, privileged)
    try:
        for group in groups:
            yield play_group(envs, agent, group)
    finally:
        envs.close()


def make_envs(config: RunConfig, games: Sequence[Path], num_envs: int, privileged: Sequence[str] = ()) -> VectorEnv:
    """Return the run's vector env: ``games`` in order (reset by index), autoreset disabled, the step cap.

    ``privileged`` is what the envs hand out in ``info`` (:func:`privileged_info`: what the agent asks for,
    :attr:`~prm_gym.agents.base.Agent.privileged`, and the walkthrough when episodes replay it).
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


@dataclass
class _Playing:
    """An episode in play on one sub-env: its spec, context (the next action's state), gold prefix and steps."""

    spec: EpisodeSpec
    context: Context
    task_type: str
    prefix: tuple[str, ...] = ()
    steps: list[Step] = field(default_factory=list)
    done: bool = False

    @property
    def replaying(self) -> bool:
        """Whether the next step is one of the expert prefix's."""
        return len(self.steps) < len(self.prefix)

    def episode(self, agent: Agent, seed: int | None) -> Episode:
        """Return the finished episode."""
        spec = self.spec
        return Episode(
            spec.episode_id, tuple(self.steps), spec.game_index, spec.repeat, self.context.game_file,
            self.task_type, agent.name, seed, spec.env_seed,
        )  # fmt: skip


def play_group(envs: VectorEnv, agent: Agent, group: Sequence[EpisodeSpec]) -> list[Episode]:
    """Play the episodes of ``group`` (at most ``envs.num_envs``) in lockstep; return them in order.

    Sub-env ``k`` plays ``group[k]``; sub-envs past the group's end wait on the group's last game. Every turn
    is one ``decide`` call over the unfinished episodes that are not replaying an expert prefix.

    Raises:
        ValueError: when the group is larger than the vector env, ``decide`` returns another number of
            decisions than it was given contexts, or an episode replays an expert prefix on envs that hand out no
            walkthrough (make them with :func:`privileged_info`).
    """
    if not 0 < len(group) <= envs.num_envs:
        raise ValueError(f"A group of {len(group)} episodes cannot be played on {envs.num_envs} sub-envs.")
    seed = group[0].agent_seed
    agent.reset(seed=seed)
    unasked = set(PRIVILEGED_INFO) - set(agent.privileged)
    games = [group[min(k, len(group) - 1)].game_index for k in range(envs.num_envs)]
    seeds = [group[k].env_seed if k < len(group) else None for k in range(envs.num_envs)]
    playing = []
    for k, (observation, info) in sorted(_reset(envs, dict(enumerate(games)), seeds).items()):
        if k < len(group):
            agent.start_episode({key: value for key, value in info.items() if key not in unasked})
            context = Context.from_reset(observation, info)
            playing.append(_Playing(group[k], context, info["task_type"], _gold_prefix(group[k], info)))
    while live := [k for k, episode in enumerate(playing) if not episode.done]:
        asked = [k for k in live if not playing[k].replaying]
        decisions = agent.decide([playing[k].context for k in asked]) if asked else []
        if len(decisions) != len(asked):
            raise ValueError(f"{agent.name} returned {len(decisions)} decisions for {len(asked)} contexts.")
        actions = [_IDLE_ACTION] * envs.num_envs
        for k, decision in zip(asked, decisions, strict=True):
            playing[k].context = playing[k].context.propose(decision.action, decision.reason)
        for k in live:
            if playing[k].replaying:
                playing[k].context = playing[k].context.propose(playing[k].prefix[len(playing[k].steps)])
            actions[k] = str(playing[k].context.action)
        observations, rewards, terminations, truncations, infos = envs.step(tuple(actions))
        ended = {}
        for k in live:
            episode, info = playing[k], sub_env_info(infos, k)
            expert = episode.replaying
            episode.done = bool(terminations[k] or truncations[k])
            episode.steps.append(Step(
                episode.context, float(rewards[k]), bool(info["won"]), episode.done, bool(truncations[k]), expert
            ))  # fmt: skip
            if episode.done:
                ended[k] = games[k]
            else:
                episode.context = episode.context.advance(observations[k], info)
        if ended and any(not episode.done for episode in playing):
            _reset(envs, ended, [None] * envs.num_envs)  # they wait for the group's last episode
    return [episode.episode(agent, seed) for episode in playing]


def _gold_prefix(spec: EpisodeSpec, info: Mapping[str, Any]) -> tuple[str, ...]:
    """Return the gold commands the episode replays first (none without ``spec.expert_prefix``)."""
    if spec.expert_prefix is None:
        return ()
    if "walkthrough" not in info:
        raise ValueError(
            f"Episode {spec.episode_id} starts along the expert trajectory, but its env hands out no walkthrough: "
            "make the envs with privileged=privileged_info(agent, specs)."
        )
    walkthrough = tuple(info["walkthrough"])
    return walkthrough[: prefix_length(spec.expert_prefix, len(walkthrough))]


def _reset(
    envs: VectorEnv, games: Mapping[int, int], seeds: Sequence[int | None]
) -> dict[int, tuple[str, dict[str, Any]]]:
    """Reset sub-envs to their games (sub-env index -> game index) with their seeds: a masked reset per game."""
    results = {}
    for game in sorted(set(games.values())):
        mask = np.array([games.get(k) == game for k in range(envs.num_envs)], dtype=np.bool_)
        options = {"game": game, "reset_mask": mask}
        observations, infos = envs.reset(seed=list(seeds), options=options)  # type: ignore[arg-type]  # one per sub-env
        results.update({int(k): (observations[k], sub_env_info(infos, int(k))) for k in np.flatnonzero(mask)})
    return results
