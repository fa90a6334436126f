"""Adapters for array-based RL libraries (Stable-Baselines3): a text env as vector observations, discrete actions.

:func:`adapt_for_sb3` stacks, in the one order that works, the wrappers a text-game env needs before an SB3
algorithm can use it, with a process reward model's rewards in front of them when one is given::

    text env -> ProcessRewardWrapper (optional) -> DiscreteCommands -> TextFeatures

The reward wrapper goes first, on the text env, because a reward model scores text (the context and the command
played); the adapters then turn commands into indices and observations into vectors. None of this imports SB3.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym

from prm_gym.prm.base import RewardModel
from prm_gym.wrappers.commands import DEFAULT_MAX_ACTIONS, DiscreteCommands
from prm_gym.wrappers.process_reward import ProcessRewardConfig, ProcessRewardWrapper
from prm_gym.wrappers.text_features import TextFeatures, TextFeaturizer

__all__ = ["SB3_GAMMA", "adapt_for_sb3"]

#: The discount of SB3's PPO, MaskablePPO and DQN by default: the shaping discount :func:`adapt_for_sb3` uses,
#: so that potential-based shaping leaves the learner's optimal policies unchanged.
SB3_GAMMA = 0.99


def adapt_for_sb3(
    env: gym.Env[str, str],
    *,
    reward_model: RewardModel | None = None,
    reward_config: ProcessRewardConfig | None = None,
    max_actions: int = DEFAULT_MAX_ACTIONS,
    featurizer: TextFeaturizer | None = None,
    parts: Sequence[str] = ("task", "observation"),
) -> TextFeatures:
    """Return ``env`` as SB3 wants it: ``Box`` observations, ``Discrete`` actions with masks, process rewards.

    With a ``reward_model``, rewards go through :class:`~prm_gym.wrappers.ProcessRewardWrapper` with
    ``reward_config``, by default potential-based shaping (``mode="shaped"``) at :data:`SB3_GAMMA`: set its
    ``gamma`` to your learner's. ``max_actions`` sizes :class:`~prm_gym.wrappers.commands.DiscreteCommands`;
    ``featurizer`` and ``parts`` configure :class:`~prm_gym.wrappers.text_features.TextFeatures`.

    Example:
        >>> import gymnasium as gym, prm_gym
        >>> class Likes:  # any reward model: score(contexts) -> floats in [0, 1]
        ...     def score(self, contexts):
        ...         return [1.0 if c.action.startswith("take") else 0.0 for c in contexts]
        >>> env = adapt_for_sb3(gym.make("prm_gym/ALFWorld-v0", split="tiny", task_types="look"), reward_model=Likes())
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, env.action_space, env.get_wrapper_attr("commands")[1]
        ((512,), Discrete(128), 'go to desk 1')
        >>> obs, reward, *_, info = env.step(1)  # a `take` command is now admissible: V(s') = 1, V(s) = 0
        >>> round(reward, 2), info["env_reward"], info["prm_value"]
        (0.99, 0.0, 1.0)
    """
    shaped: gym.Env[Any, Any] = env
    if reward_model is not None:
        config = reward_config if reward_config is not None else ProcessRewardConfig(mode="shaped", gamma=SB3_GAMMA)
        shaped = ProcessRewardWrapper(env, reward_model, config)
    return TextFeatures(DiscreteCommands(shaped, max_actions), featurizer, parts)
