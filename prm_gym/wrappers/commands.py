"""A ``Discrete`` action space over a text env's admissible commands, with the action masks MaskablePPO reads.

Stable-Baselines3 cannot act in a ``Text`` action space; :class:`DiscreteCommands` lets it pick the i-th of the
sorted admissible commands instead, and says which indices are commands now (:meth:`DiscreteCommands.action_masks`,
the method ``sb3_contrib.MaskablePPO`` calls on the env).
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["DEFAULT_MAX_ACTIONS", "NO_COMMAND", "DiscreteCommands"]

#: Default size of the action space. ALFWorld's largest admissible list is 78 commands (99th percentile 58), over
#: the 1.2 million states random play met in every game of every split (benchmarks/admissible_commands.py,
#: RESULTS.md); random play is a lower bound, hence the margin.
DEFAULT_MAX_ACTIONS = 128
#: What an index past the current list plays: the empty command, which the text env answers as any inadmissible
#: command ("Nothing happens." in ALFWorld, ``info["invalid_action"]`` set).
NO_COMMAND = ""


# Gymnasium types the wrapped env (`self.env`) with the wrapper's own types, hence Any for the inner ones.
class DiscreteCommands(gym.Wrapper[Any, Any, Any, Any]):
    """Actions are indices into the sorted admissible commands: ``Discrete(max_actions)`` for Stable-Baselines3.

    Index ``i`` plays ``sorted(info["admissible_commands"])[i]``. An index past the current list (or any other
    value) plays :data:`NO_COMMAND`, which the text env treats as it treats any inadmissible command: the game
    answers it, the step counts, and ``info["invalid_action"]`` is set. :meth:`action_masks` is ``True`` exactly
    at the indices of the current commands (at index 0 alone when there are none, so that a masked policy can
    always act). Commands past ``max_actions`` cannot be chosen: a warning says so, once. ``info["command"]``
    is the command each step played. Observations pass through: pair it with
    :class:`~prm_gym.wrappers.text_features.TextFeatures` for a vector observation.

    Example:
        >>> import gymnasium as gym, prm_gym
        >>> env = DiscreteCommands(gym.make("prm_gym/ALFWorld-v0", split="tiny", task_types="look"), 16)
        >>> obs, info = env.reset(seed=0)
        >>> env.action_space, env.action_masks()[:10].astype(int).tolist(), env.commands[:2]
        (Discrete(16), [1, 1, 1, 1, 1, 1, 1, 1, 0, 0], ['go to bed 1', 'go to desk 1'])
        >>> obs, reward, terminated, truncated, info = env.step(1)
        >>> obs, info["command"], info["invalid_action"]
        ('You arrive at desk 1. On the desk 1, you see a cellphone 1.', 'go to desk 1', False)
        >>> obs, *_, info = env.step(15)  # past the list: an inadmissible command
        >>> obs, info["command"], info["invalid_action"]
        ('Nothing happens.', '', True)
    """

    def __init__(self, env: gym.Env[Any, str], max_actions: int = DEFAULT_MAX_ACTIONS) -> None:
        """Wrap the text env ``env``; its commands go to indices ``0 .. max_actions - 1``.

        Raises:
            ValueError: when ``max_actions`` is below 1.
            TypeError: when ``env``'s actions are not text (its action space is not a ``Text`` space).
        """
        if not isinstance(max_actions, (int, np.integer)) or max_actions < 1:
            raise ValueError(f"`max_actions` should be a positive integer. Received {max_actions!r}.")
        if not isinstance(env.action_space, spaces.Text):
            raise TypeError(
                f"DiscreteCommands wraps an env whose actions are command strings; this one's action space is "
                f"{env.action_space}. Put text-level wrappers (such as ProcessRewardWrapper) inside it."
            )
        super().__init__(env)
        self.max_actions = int(max_actions)
        self.action_space = spaces.Discrete(self.max_actions)
        self._commands: list[str] = []
        self._warned = False

    @property
    def commands(self) -> list[str]:
        """The commands the indices stand for now (the sorted admissible commands, at most ``max_actions``)."""
        return self._commands[: self.max_actions]

    def action_masks(self) -> np.ndarray:
        """Return which indices are admissible commands now: a boolean vector of length ``max_actions``."""
        mask = np.zeros(self.max_actions, dtype=np.bool_)
        mask[: max(len(self.commands), 1)] = True
        return mask

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset the env and index its admissible commands."""
        observation, info = self.env.reset(seed=seed, options=options)
        self._index(info)
        return observation, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Play the command at index ``action`` (:data:`NO_COMMAND` for an index past the list)."""
        command = self._command(action)
        observation, reward, terminated, truncated, info = self.env.step(command)
        self._index(info)
        return observation, reward, terminated, truncated, {**info, "command": command}

    def _command(self, action: Any) -> str:
        index = np.asarray(action)
        if index.shape != () or not np.issubdtype(index.dtype, np.integer):
            return NO_COMMAND
        position = int(index)
        return self.commands[position] if 0 <= position < len(self.commands) else NO_COMMAND

    def _index(self, info: dict[str, Any]) -> None:
        self._commands = sorted(info.get("admissible_commands") or ())
        if len(self._commands) > self.max_actions and not self._warned:
            self._warned = True
            gym.logger.warn(
                f"{len(self._commands)} admissible commands, more than `max_actions`={self.max_actions}: the "
                f"last {len(self._commands) - self.max_actions} cannot be chosen. Raise `max_actions`."
            )
