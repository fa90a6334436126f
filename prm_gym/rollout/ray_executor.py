"""Play a run's groups of episodes on Ray actors (``executor="ray"``): the runner's folder, a cluster's workers.

:func:`~prm_gym.rollout.runner.run_episodes` decides which groups to play and appends each finished group to the
episodes folder, whatever the executor; :func:`play_on_ray` only plays the pending groups. Each actor owns a vector
env (:func:`~prm_gym.rollout.runner.make_envs`) and an agent, one policy replica per actor (with
``ray_gpus_per_actor`` of a GPU), and plays one group per task with :func:`~prm_gym.rollout.runner.play_group`,
which resets the agent and every sub-env with the group's seeds. So a group's episodes do not depend on the actor
that plays it, and the folder ends with exactly the episodes of the local executor, appended in the order groups
end (:func:`~prm_gym.rollout.storage.load_episodes` sorts them).

How actors get their agent: when the run's config carries agent settings (an
:class:`~prm_gym.agents.registry.AgentConfig`, as ``EvalConfig`` and ``CollectConfig`` are), each actor builds
its own with :func:`~prm_gym.agents.registry.make_agent`, as the CLI does: a language model is loaded by each
actor on its own device, never pickled. When the agent built there is not the one passed (another class or name:
a custom agent passed with a config), or the config has no agent settings (a plain ``RunConfig``), the agent object
itself is shipped to the actors (cloudpickle), so it must pickle.

Failures: an actor that dies (its process killed, its node lost) is restarted by Ray, and the driver submits the
group it was playing again once Ray has restarted it (waiting up to :data:`RESTART_TIMEOUT_S`: a loaded machine
restarts a Python worker slowly), up to :data:`MAX_ATTEMPTS` times; a group is appended only when it has ended, once, so
nothing is lost or written twice. An error raised by the agent or an env is not retried: it is raised here.

On a cluster, every node needs prm-gym (the same version) and ALFWorld's games: each actor lists the run's games
itself (``data_dir``, ``$ALFWORLD_DATA``, the cache) and checks that they are the driver's. Ray itself is imported
when a run starts (the ``ray`` extra), so that this module imports without it.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

from prm_gym.agents.base import Agent
from prm_gym.agents.registry import AgentConfig
from prm_gym.rollout.runner import EpisodeSpec, RunConfig, make_envs, make_run_agent, play_group
from prm_gym.rollout.storage import Episode, game_key

__all__ = ["MAX_ATTEMPTS", "RESTART_TIMEOUT_S", "play_on_ray"]

logger = logging.getLogger(__name__)

#: Times a group is submitted before a run gives up on it (each failed try lost its actor).
MAX_ATTEMPTS = 4
#: Seconds to wait for Ray to restart a dead actor (while Ray says it is restarting) before giving up on the run.
RESTART_TIMEOUT_S = 300.0
#: Seconds actors get to close their envs at the end before they are killed.
_CLOSE_TIMEOUT_S = 30.0


class GroupPlayer:
    """A Ray actor's state: the run's vector env and an agent, playing one group per :meth:`play` call."""

    def __init__(
        self,
        config: RunConfig,
        games: Sequence[tuple[str, ...]],
        num_envs: int,
        agent: Agent | None,
        privileged: Sequence[str],
    ):
        """Build the agent (from ``config`` unless ``agent`` is given) and the vector env of ``num_envs``.

        The envs' ``info`` holds the ``privileged`` entries (:func:`~prm_gym.rollout.runner.privileged_info`).

        Raises:
            ValueError: when this node's games are not the driver's ``games`` (by :func:`game_key`).
        """
        here = config.games()
        if [game_key(game) for game in here] != list(games):
            raise ValueError(
                f"The run's games differ on this node ({os.uname().nodename}: {len(here)} games, {len(games)} on the "
                "driver): give every node the same ALFWorld data (data_dir or $ALFWORLD_DATA)."
            )
        self.agent = agent if agent is not None else make_run_agent(config)
        self.envs = make_envs(config, here, num_envs, privileged)

    def identity(self) -> tuple[str, str, str]:
        """Return the agent's module, class and name (to check that the one built is the one passed)."""
        return _identity(self.agent)

    def play(self, group: Sequence[EpisodeSpec]) -> list[Episode]:
        """Play one group (:func:`~prm_gym.rollout.runner.play_group`) and return its episodes."""
        return play_group(self.envs, self.agent, group)

    def close(self) -> None:
        """Close the envs and the agent (its server connection, say)."""
        self.envs.close()
        close = getattr(self.agent, "close", None)
        if callable(close):
            close()


def play_on_ray(
    agent: Agent,
    config: RunConfig,
    groups: Sequence[Sequence[EpisodeSpec]],
    num_envs: int,
    privileged: Sequence[str],
    *,
    retried: Callable[[Sequence[EpisodeSpec]], None],
) -> Generator[list[Episode], None, None]:
    """Play ``groups`` on Ray actors, yielding each group's episodes as it ends (in any order).

    Joins ``config.ray_address`` (or the Ray already initialised in this process; else starts a local instance,
    shut down at the end), starts ``config.ray_actors`` actors (default: one per CPU, fewer if ``num_gpus`` limits
    them, never more than groups), each with ``num_envs`` sub-envs, and keeps one group in play on each.

    Args:
        agent: The agent passed to the run (built again on each actor from ``config`` when it names it).
        config: The run.
        groups: The groups to play.
        num_envs: Sub-envs per actor.
        privileged: What the actors' envs hand out in ``info`` (:func:`~prm_gym.rollout.runner.privileged_info`).
        retried: Called with a group each time it is submitted again because its actor died.

    Raises:
        ImportError: without Ray (``pip install 'prm-gym[ray]'``).
        ValueError: more actors asked for than the cluster has room for.
        RuntimeError: an actor could not start, or a group lost its actor :data:`MAX_ATTEMPTS` times.
    """
    try:
        import ray
    except ImportError as error:
        raise ImportError("executor='ray' needs Ray: pip install 'prm-gym[ray]'") from error
    started = not ray.is_initialized()
    if started:
        if config.ray_address is None:  # a local instance for this run only, even beside a running cluster
            ray.init(address="local", include_dashboard=False)
        else:
            ray.init(address=config.ray_address)
    actors: list[Any] = []
    try:
        actors = _start_actors(agent, config, num_envs, privileged, min(_actor_count(config), len(groups)))
        yield from _schedule(actors, groups, retried)
        ray.wait([actor.close.remote() for actor in actors], num_returns=len(actors), timeout=_CLOSE_TIMEOUT_S)
    finally:
        _kill(actors)  # at once on an error or Ctrl-C: their groups are not written
        if started:
            ray.shutdown()


def _actor_count(config: RunConfig) -> int:
    """Return the actors to start: ``ray_actors``, or as many as the cluster's CPUs (and GPUs) hold.

    Raises:
        ValueError: when the cluster holds fewer (none, say, for a GPU share on a cluster without GPUs).
    """
    import ray

    resources = ray.cluster_resources()
    fit = int(resources.get("CPU", 0))
    if config.ray_gpus_per_actor > 0:
        fit = min(fit, int(resources.get("GPU", 0) / config.ray_gpus_per_actor))
    wanted = config.ray_actors or max(fit, 1)
    if wanted > fit:
        raise ValueError(
            f"The Ray cluster has room for {fit} actors (1 CPU and {config.ray_gpus_per_actor} GPU each; it has "
            f"{resources.get('CPU', 0)} CPUs, {resources.get('GPU', 0)} GPUs), not {wanted}: lower ray_actors or "
            "ray_gpus_per_actor, or add nodes."
        )
    return wanted


def _start_actors(agent: Agent, config: RunConfig, num_envs: int, privileged: Sequence[str], count: int) -> list[Any]:
    """Start ``count`` actors whose agent is built from ``config`` when it names ``agent``, else ``agent`` shipped."""
    import ray
    from ray.exceptions import RayActorError

    actor_class = ray.remote(GroupPlayer).options(
        num_cpus=1, num_gpus=config.ray_gpus_per_actor, max_restarts=-1, max_task_retries=0
    )
    games = [game_key(game) for game in config.games()]

    def start(shipped: Agent | None) -> list[Any]:
        return [actor_class.remote(config, games, num_envs, shipped, privileged) for _ in range(count)]

    if not isinstance(config, AgentConfig):
        return start(agent)
    actors = start(None)
    try:
        built = ray.get(actors[0].identity.remote())
    except RayActorError as error:
        _kill(actors)
        raise RuntimeError(f"A Ray actor could not start: {error}") from error
    if built == _identity(agent):
        return actors
    _kill(actors)
    return start(agent)


def _schedule(
    actors: Sequence[Any], groups: Sequence[Sequence[EpisodeSpec]], retried: Callable[[Sequence[EpisodeSpec]], None]
) -> Generator[list[Episode], None, None]:
    """Keep one group in play on every actor; yield each group's episodes when it ends.

    A group whose actor died goes back to the front of the queue; the actor gets work again once Ray has restarted
    it (a call that waits says when: a play call sent earlier would fail at once). While Ray answers that the
    actor is still restarting, the wait is sent again, for up to :data:`RESTART_TIMEOUT_S` seconds.
    """
    import ray
    from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

    queue = collections.deque(range(len(groups)))
    attempts = collections.Counter[int]()
    calls: dict[Any, tuple[Any, int | None]] = {}  # a call in flight -> its actor, and its group (None: a wait)
    deadlines: dict[int, float] = {}  # id of an actor being restarted -> when to stop waiting for it

    def wait_for(actor: Any) -> None:
        deadlines.setdefault(id(actor), time.monotonic() + RESTART_TIMEOUT_S)
        calls[actor.identity.options(max_task_retries=MAX_ATTEMPTS).remote()] = (actor, None)

    def submit(actor: Any) -> None:
        if queue:
            index = queue.popleft()
            attempts[index] += 1
            calls[actor.play.remote(groups[index])] = (actor, index)

    for actor in actors:
        submit(actor)
    while calls:
        [call], _ = ray.wait(list(calls), num_returns=1)
        actor, index = calls.pop(call)
        try:
            result = ray.get(call)
        except RayTaskError as error:  # the agent or an env raised: not retried
            raise error.as_instanceof_cause() from None
        except RayActorError as error:
            if error.actor_init_failed:
                raise RuntimeError(f"A Ray actor could not start: {error}") from error
            if index is None:
                if isinstance(error, ActorUnavailableError) and time.monotonic() < deadlines[id(actor)]:
                    time.sleep(0.5)  # still restarting: ask again
                    wait_for(actor)
                    continue
                raise RuntimeError(f"A Ray actor was not restarted (waited {RESTART_TIMEOUT_S:.0f} s at most): "
                                   f"{error}") from error  # fmt: skip
            ids = [spec.episode_id for spec in groups[index]]
            if attempts[index] >= MAX_ATTEMPTS:
                raise RuntimeError(f"Episodes {ids} lost their Ray actor {MAX_ATTEMPTS} times: {error}") from error
            logger.warning("A Ray actor died playing episodes %s: playing them again.", ids)
            retried(groups[index])
            queue.appendleft(index)
            wait_for(actor)
            continue
        if index is not None:
            yield result
        deadlines.pop(id(actor), None)
        submit(actor)


def _kill(actors: Sequence[Any]) -> None:
    """End the actors (no restart)."""
    import ray

    for actor in actors:
        ray.kill(actor)


def _identity(agent: Agent) -> tuple[str, str, str]:
    return type(agent).__module__, type(agent).__qualname__, agent.name
