"""Process rewards as Gymnasium wrappers: each step's reward comes from (or is shaped by) a reward model.

:class:`ProcessRewardWrapper` wraps one env, :class:`VectorProcessRewardWrapper` a vector env (one batched
``score`` call per step for all sub-envs). Both keep the episode's :class:`~prm_gym.prm.context.Context`
themselves and work with any :class:`~prm_gym.prm.base.RewardModel`. Modes (``ProcessRewardConfig.mode``):

- ``replace``: reward = ``coef * Q(s, a)``, the model's score of the action taken;
- ``add``: reward = env reward + ``coef * Q(s, a)``;
- ``shaped``: reward = env reward + ``coef * (gamma * V(s') - V(s))`` with ``V(s)`` the max (or mean) of
  ``Q(s, .)`` over the admissible commands and ``V = 0`` once the episode has terminated: potential-based
  shaping (Ng et al., 1999), which leaves the optimal policies of the env unchanged. It scores every
  admissible command of each new state, so it costs one batch of ``len(admissible_commands)`` per step.
- ``recovered``: reward = ``coef * (Q(s, a) - gamma * V(s'))`` in logit units, ``Q = log(p / (1 - p))`` of the
  score ``p`` and ``V(s')`` the max (or mean) of ``Q(s', .)``, ``V = 0`` once terminated: the reward an
  InversePRM recovers (Choudhury 2025, "Process Reward Models for LLM Agents", Section 3). It replaces the env
  reward and scores each new state's admissible commands, as ``shaped`` does.

Which mode for which model: ``replace`` or ``add`` with an AgentPRM, whose score estimates the probability of
succeeding from ``(s, a)``, a reward on its own scale; ``shaped`` to guide a learner on the env's own reward
without changing its optimal policy; ``recovered`` with an InversePRM, a discriminator between expert and policy
transitions whose logit is ``Q(s, a) - gamma * V(s')``: its score only ranks the actions of one state (fine for
Best-of-N), and that difference is the per-step reward it has learnt.

``info`` gains ``env_reward`` (the env's own reward) and ``prm_score`` (the score of the action taken, in [0, 1];
NaN on a vector env's autoreset step), and in ``shaped`` and ``recovered`` modes ``prm_value`` (``V(s')``, in
logit units in ``recovered``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper

from prm_gym.envs.vector import sub_env_info
from prm_gym.prm.base import RewardModel, checked_scores
from prm_gym.prm.context import Context

__all__ = ["SCORE_EPS", "ProcessRewardConfig", "ProcessRewardWrapper", "VectorProcessRewardWrapper"]

RewardMode = Literal["replace", "add", "shaped", "recovered"]
REWARD_MODES: tuple[RewardMode, ...] = get_args(RewardMode)

#: ``recovered`` mode clamps scores to ``[SCORE_EPS, 1 - SCORE_EPS]`` before taking their logit, so that a score
#: of exactly 0 or 1 gives a large finite Q (about -13.8 or 13.8) instead of an infinite reward.
SCORE_EPS = 1e-6


@dataclass
class ProcessRewardConfig:
    """How a reward model's scores become rewards.

    ``replace`` or ``add`` for an AgentPRM (its score estimates a success probability), ``shaped`` for
    potential-based shaping of the env reward (the optimal policy is kept), ``recovered`` for an InversePRM (its
    scores are sigmoids of a discriminator's logits; the reward ``Q(s, a) - gamma * V(s')`` it recovers, Choudhury
    2025, Section 3, is the meaningful per-step quantity).

    Example:
        >>> import gymnasium as gym, prm_gym
        >>> class LikesLook:  # Q = logit(0.8) = log 4 for "look", logit(0.5) = 0 for any other command
        ...     def score(self, contexts):
        ...         return [0.8 if c.action == "look" else 0.5 for c in contexts]
        >>> config = ProcessRewardConfig(mode="recovered", gamma=0.9)
        >>> env = ProcessRewardWrapper(gym.make("prm_gym/ALFWorld-v0", split="tiny"), LikesLook(), config)
        >>> _ = env.reset(seed=0)
        >>> _, reward, *_, info = env.step("look")  # Q(s, look) - 0.9 * max Q(s', .) = log 4 - 0.9 * log 4
        >>> round(reward, 4), round(info["prm_value"], 4), info["prm_score"]
        (0.1386, 1.3863, 0.8)
    """

    #: ``replace`` the env reward with the score, ``add`` the score to it, ``shaped`` (potential-based) or
    #: ``recovered`` (an InversePRM's reward ``Q(s, a) - gamma * V(s')`` in logits, replacing the env reward).
    mode: RewardMode = "replace"
    #: Weight of the score (``replace``, ``add``), of the potential difference (``shaped``) or of the recovered reward.
    coef: float = 1.0
    #: Discount of ``V(s')`` in ``shaped`` and ``recovered`` modes; use the discount your learner (or the
    #: InversePRM's training) uses.
    gamma: float = 0.95
    #: ``V(s)`` from ``Q(s, .)`` over the admissible commands: their ``max`` (the greedy policy on Q) or their
    #: ``mean`` (a uniform policy).
    value: Literal["max", "mean"] = "max"

    def __post_init__(self) -> None:
        """Check the settings."""
        if self.mode not in REWARD_MODES:
            raise ValueError(f"`mode` should be 'replace', 'add', 'shaped' or 'recovered'. Received {self.mode!r}.")
        if self.value not in ("max", "mean"):
            raise ValueError(f"`value` should be 'max' or 'mean'. Received {self.value!r}.")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"`gamma` should be in [0, 1]. Received {self.gamma!r}.")


@dataclass(eq=False)
class _State:
    """One env's current state: its context and the scores known for it."""

    context: Context
    #: The scores (in [0, 1]) of the actions scored at this state.
    scores: dict[str, float] = field(default_factory=dict)
    #: V(s) (``shaped`` and ``recovered`` modes only; in logit units in ``recovered``).
    value: float = 0.0


@dataclass(frozen=True)
class _Transition:
    """What one env did in a step: the action sent and what came back."""

    action: str
    env_reward: float
    observation: str
    info: Mapping[str, Any]
    terminated: bool


class _ProcessRewards:
    """The scoring logic both wrappers share: gathers every context a step needs into one ``score`` call."""

    def __init__(self, reward_model: RewardModel, config: ProcessRewardConfig) -> None:
        if not callable(getattr(reward_model, "score", None)):
            raise TypeError(f"`reward_model` must have a `score(contexts)` method; got {type(reward_model).__name__}.")
        self.reward_model = reward_model
        self.config = config

    @property
    def uses_values(self) -> bool:
        """Whether the mode needs ``V(s')`` of each new state (``shaped``, ``recovered``): it then goes in ``info``."""
        return self.config.mode in ("shaped", "recovered")

    def start(self, contexts: Sequence[Context]) -> list[_State]:
        """Begin episodes at ``contexts`` (in ``shaped`` mode, their values ``V(s)`` are scored in one batch)."""
        states = [_State(context) for context in contexts]
        self._score([], states if self.config.mode == "shaped" else [])
        return states

    def step(
        self, states: Sequence[_State], transitions: Sequence[_Transition]
    ) -> tuple[list[_State], list[float], list[float]]:
        """Apply one transition per env; return the next states, the rewards and the scores of the actions taken."""
        next_states = [
            _State(state.context.propose(t.action).advance(t.observation, t.info))
            for state, t in zip(states, transitions, strict=True)
        ]
        to_value = [s for s, t in zip(next_states, transitions, strict=True) if not t.terminated]
        self._score(
            [(state, t.action) for state, t in zip(states, transitions, strict=True)],
            to_value if self.uses_values else [],
        )
        rewards, scores = [], []
        for state, nxt, t in zip(states, next_states, transitions, strict=True):
            rewards.append(self._reward(state, t, 0.0 if t.terminated else nxt.value))
            scores.append(state.scores[t.action])
        return next_states, rewards, scores

    def _reward(self, state: _State, t: _Transition, next_value: float) -> float:
        """Return the reward of ``t`` taken at ``state`` in the configured mode; ``next_value`` is V(s')."""
        mode, coef, gamma = self.config.mode, self.config.coef, self.config.gamma
        q = self._q(state.scores[t.action])
        if mode == "replace":
            return coef * q
        if mode == "add":
            return t.env_reward + coef * q
        if mode == "shaped":  # potential-based shaping (Ng et al., 1999)
            return t.env_reward + coef * (gamma * next_value - state.value)
        return coef * (q - gamma * next_value)  # r(s, a) = Q(s, a) - gamma V(s') (Choudhury 2025, Section 3)

    def _q(self, score: float) -> float:
        """Q from a score: its logit in ``recovered`` mode (an InversePRM scores sigmoid(Q)), the score otherwise."""
        if self.config.mode != "recovered":
            return score
        p = min(max(score, SCORE_EPS), 1.0 - SCORE_EPS)
        return math.log(p / (1.0 - p))

    def _score(self, actions: list[tuple[_State, str]], to_value: list[_State]) -> None:
        """Score, in one call, the (state, action) pairs not scored yet and every command of ``to_value``'s states.

        The states in ``to_value`` then get their value V(s): the max or mean of Q over their admissible commands.
        """
        requests: list[tuple[_State, str]] = []
        for state in to_value:
            requests.extend((state, command) for command in state.context.admissible_commands)
        for state, action in actions:
            if action not in state.scores and (state, action) not in requests:
                requests.append((state, action))
        if requests:
            scores = checked_scores(self.reward_model, [state.context.propose(action) for state, action in requests])
            for (state, action), score in zip(requests, scores, strict=True):
                state.scores[action] = score
        for state in to_value:
            values = [self._q(state.scores[c]) for c in state.context.admissible_commands]
            aggregate = max if self.config.value == "max" else (lambda v: sum(v) / len(v))
            state.value = aggregate(values) if values else 0.0


def _require_text(wrapper: str, observation_space: gym.Space[Any], action_space: gym.Space[Any]) -> None:
    """Refuse an env whose observations or actions are not text: the reward model reads the game's words."""
    if not (isinstance(observation_space, gym.spaces.Text) and isinstance(action_space, gym.spaces.Text)):
        raise TypeError(
            f"{wrapper} scores the text of observations and actions; this env's observation space is "
            f"{observation_space} and its action space {action_space}. Wrap the text env first and put adapters "
            f"such as DiscreteCommands and TextFeatures outside it, or let adapt_for_sb3(env, reward_model=...) "
            f"stack them in that order."
        )


class ProcessRewardWrapper(gym.Wrapper[str, str, str, str]):
    """Rewards from a process reward model, for one text-game env.

    Example:
        >>> import gymnasium as gym, prm_gym
        >>> class Likes:  # any object with score(contexts) -> floats in [0, 1]
        ...     def score(self, contexts):
        ...         return [1.0 if c.action.startswith("go to") else 0.0 for c in contexts]
        >>> env = ProcessRewardWrapper(gym.make("prm_gym/ALFWorld-v0", split="tiny"), Likes())
        >>> obs, info = env.reset(seed=0)
        >>> _, reward, *_, info = env.step("look")
        >>> reward, info["prm_score"], info["env_reward"]
        (0.0, 0.0, 0.0)
    """

    def __init__(
        self, env: gym.Env[str, str], reward_model: RewardModel, config: ProcessRewardConfig | None = None
    ) -> None:
        """Wrap ``env``; ``config`` defaults to ``replace`` mode.

        Raises:
            TypeError: when ``env``'s observations or actions are not text (an adapter is already inside).
        """
        _require_text("ProcessRewardWrapper", env.observation_space, env.action_space)
        super().__init__(env)
        self._rewards = _ProcessRewards(reward_model, config or ProcessRewardConfig())
        self._state: _State | None = None

    @property
    def context(self) -> Context | None:
        """The current context (task, history, observation, admissible commands); ``None`` before reset."""
        return None if self._state is None else self._state.context

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Reset the env and start a new history."""
        observation, info = self.env.reset(seed=seed, options=options)
        (self._state,) = self._rewards.start([Context.from_reset(observation, info)])
        return observation, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Step the env and replace or shape its reward with the model's score."""
        if self._state is None:
            raise gym.error.ResetNeeded("Call `reset()` before `step()`.")
        observation, env_reward, terminated, truncated, info = self.env.step(action)
        transition = _Transition(str(action), float(env_reward), observation, info, bool(terminated))
        (self._state,), (reward,), (score,) = self._rewards.step([self._state], [transition])
        info = {**info, "env_reward": float(env_reward), "prm_score": score}
        if self._rewards.uses_values:
            info["prm_value"] = 0.0 if terminated else self._state.value
        return observation, reward, terminated, truncated, info


class VectorProcessRewardWrapper(VectorWrapper):
    """Rewards from a process reward model for every sub-env of a vector env, in one batched call per step.

    Handles the vector env's autoreset (``NEXT_STEP``, the default, ``SAME_STEP`` and masked resets with
    ``DISABLED``): an episode's history ends where its sub-env resets.

    Example:
        >>> import gymnasium as gym, prm_gym
        >>> class Likes:
        ...     def score(self, contexts):
        ...         return [1.0 if c.action.startswith("go to") else 0.0 for c in contexts]
        >>> envs = VectorProcessRewardWrapper(gym.make_vec("prm_gym/ALFWorld-v0", num_envs=2, split="tiny"), Likes())
        >>> obs, infos = envs.reset(seed=0)
        >>> _, rewards, *_ = envs.step(("look", infos["admissible_commands"][1][0]))
        >>> rewards.tolist()
        [0.0, 1.0]
    """

    def __init__(self, env: VectorEnv, reward_model: RewardModel, config: ProcessRewardConfig | None = None) -> None:
        """Wrap the vector env ``env``; ``config`` defaults to ``replace`` mode.

        Raises:
            TypeError: when the sub-envs' observations or actions are not text (an adapter is already inside).
        """
        _require_text("VectorProcessRewardWrapper", env.single_observation_space, env.single_action_space)
        super().__init__(env)
        self._rewards = _ProcessRewards(reward_model, config or ProcessRewardConfig())
        self._autoreset_mode = AutoresetMode(env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP))
        self._states: list[_State | None] = [None] * self.num_envs
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)

    @property
    def contexts(self) -> list[Context | None]:
        """Each sub-env's current context (``None`` before its first reset)."""
        return [None if state is None else state.context for state in self._states]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset the sub-envs (all, or those in ``options["reset_mask"]``) and start new histories."""
        mask = None if options is None or "reset_mask" not in options else np.asarray(options["reset_mask"])
        observations, infos = self.env.reset(seed=seed, options=options)
        indices = [i for i in range(self.num_envs) if mask is None or mask[i]]
        started = self._rewards.start([Context.from_reset(observations[i], sub_env_info(infos, i)) for i in indices])
        for i, state in zip(indices, started, strict=True):
            self._states[i] = state
            self._needs_reset[i] = False
        return observations, infos

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every sub-env; score all their actions (and new states' values) in one call."""
        if any(state is None for state in self._states):
            raise gym.error.ResetNeeded("Call `reset()` before `step()`.")
        observations, env_rewards, terminations, truncations, infos = self.env.step(actions)
        rewards = np.array(env_rewards, dtype=np.float64)
        scores = np.full(self.num_envs, math.nan)
        values = np.zeros(self.num_envs)
        done = np.logical_or(terminations, truncations)
        same_step = self._autoreset_mode == AutoresetMode.SAME_STEP
        # Under NEXT_STEP, a sub-env whose episode ended last step was reset by this step: no transition.
        stepped = [i for i in range(self.num_envs) if not self._needs_reset[i]]
        transitions = []
        for i in stepped:
            final = same_step and done[i]  # SAME_STEP: the episode's last observation is in `final_obs`
            observation = infos["final_obs"][i] if final else observations[i]
            info = sub_env_info(infos["final_info"], i) if final else sub_env_info(infos, i)
            transitions.append(
                _Transition(str(actions[i]), float(env_rewards[i]), observation, info, bool(terminations[i]))
            )
        states = [self._states[i] for i in stepped]
        next_states, step_rewards, step_scores = self._rewards.step(states, transitions)  # type: ignore[arg-type]
        for j, i in enumerate(stepped):
            self._states[i], rewards[i], scores[i] = next_states[j], step_rewards[j], step_scores[j]
            values[i] = 0.0 if terminations[i] else next_states[j].value
        # Sub-envs that were reset in this step (NEXT_STEP: ended last step; SAME_STEP: ended now) begin anew.
        fresh = [i for i in stepped if done[i]] if same_step else np.flatnonzero(self._needs_reset).tolist()
        contexts = [Context.from_reset(observations[i], sub_env_info(infos, i)) for i in fresh]
        for i, state in zip(fresh, self._rewards.start(contexts), strict=True):
            self._states[i] = state
        self._needs_reset = done & (not same_step)
        infos = {**infos, "env_reward": np.asarray(env_rewards, dtype=np.float64), "prm_score": scores}
        if self._rewards.uses_values:
            infos["prm_value"] = values
        return observations, rewards, terminations, truncations, infos
