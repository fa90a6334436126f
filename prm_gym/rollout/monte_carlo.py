"""A Monte-Carlo rollout estimator of Q(s, a), usable wherever a reward model is.

:class:`MonteCarloRewardModel` scores a context by playing it: it brings its own env to the context's state
(the game named by ``context.game_file``, then the history's actions), sends the proposed action and runs
``num_rollouts`` episodes of a rollout policy from the state that follows, branching with the env's state
snapshots (:meth:`~prm_gym.envs.text_game_env.TextGameEnv.snapshot` / ``restore``). Any game a
:class:`~prm_gym.envs.text_game_env.TextGameEnv` plays can be scored: by default ALFWorld's ``.tw-pddl`` games
are played by :class:`~prm_gym.envs.alfworld.env.ALFWorldEnv` and other TextWorld games (``.z1``-``.z8``,
``.json``) by :class:`~prm_gym.envs.textworld_env.TextWorldEnv` (:func:`default_env_factory`), whose engine
restores a state by replaying its commands: slower, same estimates. The score is the mean discounted outcome,
normalised to [0, 1] the way Monte-Carlo training targets are (:mod:`prm_gym.prm.targets`), so it is an unbiased
stand-in for a trained PRM, and a baseline.
States it has reached are remembered (by state key) so that scoring several actions at one state, or the
next state of the same episode, does not replay the history again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from prm_gym.agents import Agent, RandomAgent
from prm_gym.envs.game_files import game_format
from prm_gym.prm.context import Context
from prm_gym.prm.targets import TargetsConfig, normalised_q, step_return

if TYPE_CHECKING:
    from prm_gym.envs.text_game_env import EnvSnapshot, TextGameEnv

__all__ = ["EnvFactory", "MonteCarloConfig", "MonteCarloRewardModel", "default_env_factory"]

#: Builds the estimator's env from a game file: an env that plays that game and every other game of its format
#: (:func:`~prm_gym.envs.game_files.game_format`), each reset naming its game.
EnvFactory = Callable[[str], "TextGameEnv"]


def default_env_factory(game_file: str, **alfworld_kwargs: Any) -> TextGameEnv:
    """Return an env that plays ``game_file``: ALFWorld's env for ``.tw-pddl`` games, TextWorld's for the others.

    ``alfworld_kwargs`` are options of :class:`~prm_gym.envs.alfworld.env.ALFWorldEnv` (``backend``, say); they
    do not concern other games, whose :class:`~prm_gym.envs.textworld_env.TextWorldEnv` has no option that
    matters to an estimator. The envs are imported here, on first use, so that importing the estimator loads no
    game engine.

    Raises:
        ValueError: when ``game_file`` is not of a format TextWorld plays.
    """
    if game_format(game_file) == "tw-pddl":
        from prm_gym.envs.alfworld.env import ALFWorldEnv

        return ALFWorldEnv(game_files=[game_file], **alfworld_kwargs)
    from prm_gym.envs.textworld_env import TextWorldEnv

    return TextWorldEnv(game_files=[game_file])


@dataclass
class MonteCarloConfig:
    """How Q(s, a) is estimated by rollouts."""

    #: Rollouts per scored (state, action) (the paper's targets use 16 repeats per game).
    num_rollouts: int = 16
    #: Step cap of an episode, counted from the game's start (the paper's 30); a rollout stops there, as lost.
    max_episode_steps: int = 30
    #: Discount and outcome conventions, shared with the Monte-Carlo training targets.
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    #: Seed of the default rollout policy (uniform over admissible commands).
    seed: int = 0
    #: States kept reachable without replay (their snapshots), least recently used dropped first.
    cache_size: int = 4096
    #: Options of the ALFWorld env the default env factory plays ``.tw-pddl`` games with (such as
    #: ``{"backend": "textworld"}``); see :func:`default_env_factory`. Empty when an ``env_factory`` is given.
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check the settings."""
        if self.num_rollouts < 1:
            raise ValueError(f"`num_rollouts` should be at least 1. Received {self.num_rollouts}.")
        if self.max_episode_steps < 1:
            raise ValueError(f"`max_episode_steps` should be at least 1. Received {self.max_episode_steps}.")


class MonteCarloRewardModel:
    """Q(s, a) by rollouts from the state after ``a``: a :class:`~prm_gym.prm.base.RewardModel` with no training.

    Contexts must carry their ``game_file`` (contexts built by :meth:`Context.from_reset` do). The estimator keeps
    one env per game format, made by ``env_factory(game_file)`` when a game of that format first comes (default:
    :func:`default_env_factory` with the config's ``env_kwargs``), so contexts of ALFWorld and TextWorld games mix.

    Example:
        >>> import gymnasium as gym, prm_gym
        >>> from prm_gym.prm import Context
        >>> env = gym.make("prm_gym/ALFWorld-v0", split="tiny", privileged=("walkthrough",))
        >>> obs, info = env.reset(options={"game": 0})
        >>> context = Context.from_reset(obs, info)
        >>> model = MonteCarloRewardModel(MonteCarloConfig(num_rollouts=2))
        >>> model.score([context.propose(info["walkthrough"][0]), context.propose("inventory")])  # doctest: +SKIP
        [0.6, 0.0]
    """

    def __init__(
        self,
        config: MonteCarloConfig | None = None,
        policy_factory: Callable[[int], Agent] | None = None,
        env_factory: EnvFactory | None = None,
    ) -> None:
        """Create the estimator; ``policy_factory(seed)`` builds the rollout policy (default: uniform random).

        ``env_factory(game_file)`` builds the env that plays a game (see :data:`EnvFactory`; default:
        :func:`default_env_factory` with ``config.env_kwargs``).

        Raises:
            ValueError: when both an ``env_factory`` and ``config.env_kwargs`` are given (the factory decides).
        """
        self.config = config or MonteCarloConfig()
        if env_factory is not None and self.config.env_kwargs:
            raise ValueError("Give either an `env_factory` or the config's `env_kwargs` (of the default factory).")
        self._policy_factory = policy_factory or (lambda seed: RandomAgent(seed=seed))
        alfworld_kwargs = dict(self.config.env_kwargs)
        self._env_factory: EnvFactory = env_factory or (lambda game: default_env_factory(game, **alfworld_kwargs))
        #: The estimator's envs, by game format; ``_env`` is the one that played last.
        self._envs: dict[str, TextGameEnv] = {}
        self._env: TextGameEnv | None = None
        #: Reached states: cache key -> (env snapshot, steps taken since the game's start).
        self._snapshots: OrderedDict[str, tuple[EnvSnapshot, int]] = OrderedDict()

    def score(self, contexts: Sequence[Context]) -> list[float]:
        """Return the normalised Monte-Carlo Q estimate of each context's proposed action."""
        return [self._estimate(context) for context in contexts]

    def close(self) -> None:
        """Release the estimator's envs and forget the states it kept."""
        for env in self._envs.values():
            env.close()
        self._envs.clear()
        self._env = None
        self._snapshots.clear()

    def _estimate(self, context: Context) -> float:
        if context.action is None:
            raise ValueError("The Monte-Carlo estimator scores proposed actions: the context has no `action`.")
        env = self._reach(context)
        observation, _, terminated, _, info = env.step(context.action)
        steps = len(context.history) + 1
        if terminated or steps >= self.config.max_episode_steps:
            returns = [step_return(bool(info["won"]), 0, self.config.targets, t=steps - 1)]
        else:
            after = context.propose(context.action).advance(observation, info)
            snapshot = self._remember(after, steps)
            returns = [self._rollout(env, snapshot, after, steps, seed) for seed in self._seeds(context)]
        return normalised_q(float(np.mean(returns)), self.config.targets)

    def _rollout(self, env: TextGameEnv, start: EnvSnapshot, context: Context, steps: int, seed: int) -> float:
        """Play the rollout policy from ``start`` (``context``, ``steps`` actions in) to the end; return its return.

        The policy decides on the episode's whole context, history included, as it would have in the episode.
        """
        env.restore(start)
        policy = self._policy_factory(seed)
        policy.reset(seed)
        played = 0
        won = False
        while steps + played < self.config.max_episode_steps:
            (decision,) = policy.decide([context])
            observation, _, terminated, _, info = env.step(decision.action)
            context = context.propose(decision.action, decision.reason).advance(observation, info)
            played += 1
            if terminated:
                won = bool(info["won"])
                break
        return step_return(won, played, self.config.targets, t=steps - 1)

    def _reach(self, context: Context) -> TextGameEnv:
        """Put the estimator's env in the context's state: from the nearest remembered state, else from reset."""
        if not context.game_file:
            raise ValueError("The Monte-Carlo estimator needs the context's `game_file` to play it.")
        env = self._environment(context.game_file)
        prefixes = [Context(context.task, context.history[:i], observation, game_file=context.game_file)
                    for i, (observation, _) in enumerate(context.history)]
        prefixes.append(Context(context.task, context.history, context.observation, game_file=context.game_file))
        for start in range(len(prefixes) - 1, -1, -1):
            remembered = self._snapshots.get(_cache_key(prefixes[start]))
            if remembered is not None:
                self._snapshots.move_to_end(_cache_key(prefixes[start]))
                env.restore(remembered[0])
                break
        else:
            start = 0
            observation, info = env.reset(options={"game": context.game_file})
            if observation != prefixes[0].observation:
                raise ValueError(f"The context does not start like its game {context.game_file}: wrong game file?")
            self._remember(prefixes[0], 0)
        for i in range(start, len(context.history)):
            observation, _, _, _, info = env.step(context.history[i][1])
            expected = prefixes[i + 1].observation
            if observation != expected:
                raise ValueError(
                    f"Replaying the context's history in {context.game_file} gives {observation!r} at turn {i + 1}, "
                    f"not {expected!r}: the history does not belong to this game."
                )
            self._remember(prefixes[i + 1], i + 1)
        return env

    def _remember(self, context: Context, steps: int) -> EnvSnapshot:
        """Keep (and return) the env's current state, the state of ``context``, ``steps`` into the game."""
        assert self._env is not None  # noqa: S101 - _reach created it
        snapshot = self._env.snapshot()
        self._snapshots[_cache_key(context)] = (snapshot, steps)
        while len(self._snapshots) > self.config.cache_size:
            self._snapshots.popitem(last=False)
        return snapshot

    def _seeds(self, context: Context) -> list[int]:
        """Rollout seeds: a function of the config's seed and the (state, action), so scores are reproducible."""
        base = int(context.key[:8], 16) ^ self.config.seed
        return [base + k for k in range(self.config.num_rollouts)]

    def _environment(self, game_file: str) -> TextGameEnv:
        """Return (and make current) the env of ``game_file``'s format, built on the format's first game."""
        kind = game_format(game_file)
        if kind not in self._envs:  # any game of the format: each reset names the game it plays
            self._envs[kind] = self._env_factory(game_file)
        self._env = self._envs[kind]
        return self._env


def _cache_key(context: Context) -> str:
    return f"{context.game_file}\0{context.state_key}"
