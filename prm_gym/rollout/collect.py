"""Roll a policy out many times on ALFWorld games into a resumable episodes folder (the AgentPRM paper's data).

:func:`collect_rollouts` plays every (game, repeat) episode of a :class:`CollectConfig` (the paper plays each game
16 times, so that states recur and their Monte-Carlo targets average several rollouts) with the episode runner
(:mod:`prm_gym.rollout.runner`: lockstep groups of ``num_envs`` sub-envs, one batched ``decide`` per turn), into
an output folder in the format of :mod:`prm_gym.rollout.storage`; :func:`~prm_gym.rollout.storage.load_episodes`
reads them back, and :mod:`prm_gym.prm.targets` computes Q targets from them.

Seeds: the episode of game g, repeat r resets its env with a seed drawn from (``seed``, g, r), and the agent is
reset at each group's start with the seed of the group's first episode. Episodes are played in (game, repeat)
order, so a group holds repeats of one game, played side by side from one random stream.

The paper's reset distribution (``expert_prefix_share``): with a weak policy, rollouts from the game's start
rarely win and their Monte-Carlo targets collapse towards 0. A share of the episodes instead starts from a state
along the game's gold walkthrough: it replays the walkthrough's first k commands, then the policy plays on, so
rollouts near the goal win (positive targets) and the policy's loops there lose. Which episodes, and where along
the walkthrough they start, is drawn from (``seed``, g, r) too (:func:`expert_prefix_position`), in a stream of
its own: a resumed run is identical, and a share of 0 plays exactly the episodes it played before the setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from prm_gym.agents.base import Agent
from prm_gym.agents.registry import AgentConfig, AgentName
from prm_gym.rollout.runner import EpisodeSpec, RunConfig, run_episodes

__all__ = ["CollectConfig", "collect_rollouts", "episode_seed", "expert_prefix_position"]


@dataclass
class CollectConfig(AgentConfig, RunConfig):
    """Which episodes to roll out (the run's settings, ``repeats``), with which agent, and where to write them.

    Example:
        >>> config = CollectConfig(split="tiny", repeats=2)
        >>> (config.agent, config.num_envs, config.vectorization, config.output_dir)
        ('random', 4, 'async', 'runs/rollouts')
    """

    #: The agent (see :class:`~prm_gym.agents.registry.AgentConfig`); random rollouts are the paper's.
    agent: AgentName = "random"
    #: ALFWorld split: train (the paper's rollouts), valid_seen, valid_unseen, valid_train, or the bundled tiny.
    split: str = "train"
    #: Episodes per game (the paper's 16, so that states recur).
    repeats: int = 16
    #: Share of episodes, in [0, 1], that start from a state along the game's gold walkthrough (the paper's reset
    #: distribution): they replay its first k commands, k uniform in [1, n - 1] for n commands, recorded as steps
    #: marked `expert_prefix`, then the agent plays on. The envs hand out the walkthrough only when it is above 0.
    expert_prefix_share: float = 0.0
    #: Sub-envs of the vector env: episodes played together, one `decide` call per turn over all of them.
    num_envs: int = 4
    #: "async": sub-envs in their own processes (games played in parallel); "sync": in this process.
    vectorization: Literal["sync", "async"] = "async"
    #: Where ``episodes.jsonl`` and ``config.json`` go; a rerun with the same config resumes there.
    output_dir: str | None = "runs/rollouts"

    def __post_init__(self) -> None:
        """Check the agent's settings, the run's and ``repeats``; a collection needs an output folder."""
        AgentConfig.__post_init__(self)
        RunConfig.__post_init__(self)
        if self.repeats < 1:
            raise ValueError(f"`repeats` should be at least 1. Received {self.repeats}.")
        if not 0.0 <= self.expert_prefix_share <= 1.0:
            share = self.expert_prefix_share
            raise ValueError(f"`expert_prefix_share` should be in the interval [0, 1]. Received {share}.")
        if self.output_dir is None:
            raise ValueError("A collection writes its episodes to `output_dir`: give one.")


def episode_seed(base_seed: int, game_index: int, repeat: int) -> int:
    """Return the seed of the episode of game ``game_index``, repeat ``repeat`` (independent streams per episode)."""
    return int(np.random.SeedSequence([base_seed, game_index, repeat]).generate_state(1)[0])


def expert_prefix_position(base_seed: int, game_index: int, repeat: int, share: float) -> float | None:
    """Return where along its game's walkthrough the episode of (game, repeat) starts: in [0, 1), or ``None``.

    ``None`` starts at the game's start; a position becomes the episode's
    :attr:`EpisodeSpec.expert_prefix <prm_gym.rollout.runner.EpisodeSpec.expert_prefix>`. Both draws come from a
    child of the episode's seed sequence (independent of :func:`episode_seed`): the first picks the episode with
    probability ``share`` (so the episodes picked at one share are among those picked at a larger one), the second
    is the position.

    Example:
        >>> expert_prefix_position(0, 3, 1, share=0.0) is None, 0 <= expert_prefix_position(0, 3, 1, share=1.0) < 1
        (True, True)
    """
    (stream,) = np.random.SeedSequence([base_seed, game_index, repeat]).spawn(1)
    picked, position = np.random.default_rng(stream).random(2)
    return float(position) if picked < share else None


def collect_rollouts(agent: Agent, config: CollectConfig, *, progress: bool = True) -> Path:
    """Play every (game, repeat) episode of ``config`` not yet in its output folder; return the folder.

    Raises:
        ValueError: when the folder holds another run (other settings, agent or games), or damaged rows.

    Example:
        >>> import tempfile
        >>> from prm_gym.agents import WalkthroughAgent
        >>> from prm_gym.rollout.storage import load_episodes
        >>> config = CollectConfig(split="tiny", num_games=1, repeats=2, num_envs=2, vectorization="sync",
        ...                        output_dir=tempfile.mkdtemp())
        >>> episodes = load_episodes(collect_rollouts(WalkthroughAgent(), config, progress=False))
        >>> [(episode.episode_id, episode.won) for episode in episodes]
        [('0:0', True), ('0:1', True)]
    """
    specs = []
    for game in range(len(config.games())):
        for repeat in range(config.repeats):
            seed = episode_seed(config.seed, game, repeat)
            prefix = expert_prefix_position(config.seed, game, repeat, config.expert_prefix_share)
            specs.append(EpisodeSpec(game, repeat, env_seed=seed, agent_seed=seed, expert_prefix=prefix))
    run_episodes(agent, config, specs, run="collect", progress=progress, keep=False)
    return Path(str(config.output_dir))
