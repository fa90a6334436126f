"""Fixed-size float vectors from a text env's observations, for learners that read arrays (Stable-Baselines3).

:class:`TextFeatures` turns each observation into a vector built from the episode's text parts (the task, the
observation, optionally the admissible commands), each part turned into ``dim`` floats by a
:class:`TextFeaturizer`: :class:`HashingFeaturizer`, dependency-free and the default, or
:class:`~prm_gym.wrappers.embeddings.TransformerEmbeddings`, a language model's mean-pooled hidden states.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, SupportsFloat, runtime_checkable

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["PARTS", "HashingFeaturizer", "TextFeatures", "TextFeaturizer"]

#: The text parts an observation vector can be built from: the goal sentence (``info["task"]``), the observation,
#: and the admissible commands (one text, a line each).
PARTS = ("task", "observation", "commands")
_WORD = re.compile(r"[a-z0-9]+")


@runtime_checkable
class TextFeaturizer(Protocol):
    """Turns texts into unit-norm vectors: ``transform(texts)`` has shape ``(len(texts), dim)``, values in [-1, 1]."""

    @property
    def dim(self) -> int:
        """Floats per text."""

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """Return one float32 row per text."""


@dataclass(frozen=True)
class HashingFeaturizer:
    """The hashing trick over word n-grams: each n-gram adds +-1 at a hashed index; rows are L2-normalised.

    Indices and signs come from BLAKE2b, not Python's salted ``hash``, so a text gets the same vector in every
    process and on every run (vector envs, resumed training).

    Example:
        >>> same, other = HashingFeaturizer(dim=8).transform(["Go to desk 1!", "go to bed 1"])
        >>> bool((same == HashingFeaturizer(dim=8).transform(["go to desk 1"])[0]).all()), bool((same != other).any())
        (True, True)
        >>> round(float(np.linalg.norm(same)), 6)
        1.0
    """

    #: Floats per text.
    dim: int = 256
    #: Longest word n-gram hashed (1: words only; 2: words and word pairs).
    ngram: int = 2

    def __post_init__(self) -> None:
        """Check the settings."""
        if self.dim < 1:
            raise ValueError(f"`dim` should be at least 1. Received {self.dim}.")
        if self.ngram < 1:
            raise ValueError(f"`ngram` should be at least 1. Received {self.ngram}.")

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """Return the texts' hashed, L2-normalised n-gram counts (lower-cased words), shape ``(len(texts), dim)``."""
        rows = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in zip(rows, texts, strict=True):
            words = _WORD.findall(text.lower())
            for n in range(1, self.ngram + 1):
                for start in range(len(words) - n + 1):
                    index, sign = _bucket(" ".join(words[start : start + n]), self.dim)
                    row[index] += sign
            norm = np.linalg.norm(row)
            if norm > 0:
                row /= norm
        return rows


@functools.lru_cache(maxsize=1 << 16)
def _bucket(gram: str, dim: int) -> tuple[int, float]:
    """Return the index and sign of an n-gram: a stable hash (BLAKE2b), the same in every process."""
    digest = int.from_bytes(hashlib.blake2b(gram.encode("utf-8"), digest_size=8).digest(), "little")
    return digest % dim, 1.0 if (digest >> 63) & 1 else -1.0


# Gymnasium types the wrapped env (`self.env`) with the wrapper's own types, hence Any for the inner ones.
class TextFeatures(gym.Wrapper[Any, Any, Any, Any]):
    """Observations as a fixed-size float vector: the featurized text ``parts``, concatenated.

    Each part (:data:`PARTS`) becomes ``featurizer.dim`` floats in [-1, 1]: the task (``info["task"]``, kept from
    the reset when a step's ``info`` lacks it), the observation, and the admissible commands (one line each).
    The texts are featurized in one ``transform`` call per step. ``info`` passes through unchanged.

    Example:
        >>> import gymnasium as gym, prm_gym
        >>> env = TextFeatures(gym.make("prm_gym/ALFWorld-v0", split="tiny"), HashingFeaturizer(dim=64))
        >>> obs, info = env.reset(seed=0)
        >>> env.observation_space, obs.dtype, obs.shape
        (Box(-1.0, 1.0, (128,), float32), dtype('float32'), (128,))
        >>> obs2, *_ = TextFeatures(gym.make("prm_gym/ALFWorld-v0", split="tiny"), HashingFeaturizer(dim=64)).reset(
        ...     seed=0)
        >>> bool((obs == obs2).all())
        True
    """

    def __init__(
        self,
        env: gym.Env[str, Any],
        featurizer: TextFeaturizer | None = None,
        parts: Sequence[str] = ("task", "observation"),
    ) -> None:
        """Wrap the text env ``env``; ``featurizer`` defaults to :class:`HashingFeaturizer`'s defaults.

        Raises:
            ValueError: when ``parts`` is empty, repeats a part or names one not in :data:`PARTS`.
            TypeError: when ``featurizer`` has no ``transform`` and ``dim``, or ``env``'s observations are not text.
        """
        parts = tuple(parts)
        unknown = [part for part in parts if part not in PARTS]
        if not parts or unknown or len(set(parts)) != len(parts):
            raise ValueError(f"`parts` should be distinct names from {PARTS}. Received {parts!r}.")
        chosen: TextFeaturizer = featurizer if featurizer is not None else HashingFeaturizer()
        if not isinstance(chosen, TextFeaturizer):
            raise TypeError(f"`featurizer` needs `dim` and `transform(texts)`; got {type(chosen).__name__}.")
        if not isinstance(env.observation_space, spaces.Text):
            raise TypeError(
                f"TextFeatures wraps an env whose observations are text; this one's observation space is "
                f"{env.observation_space}. Put text-level wrappers (such as ProcessRewardWrapper) inside it."
            )
        super().__init__(env)
        self.featurizer = chosen
        self.parts = parts
        self.observation_space = spaces.Box(-1.0, 1.0, (len(parts) * chosen.dim,), np.float32)
        self._task = ""

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the env; return the vector of its first observation."""
        observation, info = self.env.reset(seed=seed, options=options)
        self._task = str(info.get("task") or "")
        return self._vector(observation, info), info

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the env; return the vector of its observation."""
        observation, reward, terminated, truncated, info = self.env.step(action)
        return self._vector(observation, info), reward, terminated, truncated, info

    def _vector(self, observation: str, info: dict[str, Any]) -> np.ndarray:
        texts = {
            "task": str(info.get("task") or self._task),
            "observation": observation,
            "commands": "\n".join(info.get("admissible_commands") or ()),
        }
        vectors = self.featurizer.transform([texts[part] for part in self.parts])
        return np.clip(vectors.reshape(-1), -1.0, 1.0).astype(np.float32, copy=False)
