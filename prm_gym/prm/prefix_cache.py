"""A bounded cache of the keys and values of token prefixes, reused from one forward to the next.

An episode's render only grows from turn to turn (:mod:`prm_gym.prm.prompt` is append-only), so the keys and
values a decoder computed for turn t's tokens are the first ones of turn t+1's: a forward of turn t+1 needs to
run only the tokens after the longest prefix it shares with something already computed. :class:`PrefixCache`
holds such prefixes: :meth:`PrefixCache.match` returns the longest cached prefix of a token sequence (its
length, and its per-layer keys and values, ready to be extended by a ``transformers`` forward), and
:meth:`PrefixCache.store` keeps the keys and values of a sequence. The keys and values of a causal model's first
k tokens depend on those tokens only, so a match may end inside an entry: turn t+1's render, whose header
changed when the token budget dropped old turns, still reuses the system prompt and the task.

It serves any decoder with full attention (a sequence classifier's backbone, a causal LM), in the per-layer
``(keys, values)`` layout of ``transformers.DynamicCache`` (``(1, kv_heads, tokens, head_dim)`` each).

**Memory.** The cache holds at most ``max_tokens`` tokens over all entries, least recently used (stored or
matched) evicted first; ``max_tokens=0`` turns it off. A token costs ``layers x kv_heads x head_dim x 2 (keys
and values) x bytes per value``: SmolLM2-135M (30 layers, 3 kv heads of 64) takes 23 KB per token in bf16 (46 KB
in float32), so 16,384 tokens take 377 MB (755 MB). An entry that is a prefix of a newly stored one is dropped
(the new one holds its keys and values), so an episode scored turn after turn keeps one growing entry.

**Lookup** is a scan over the entries (a vectorised comparison of token ids each): a token cap allows a few
tens of entries, for which this costs well under a millisecond. vLLM-style hashes of token blocks would pay off
with thousands of entries.

**Validity.** Keys and values depend on the weights as much as on the tokens: :meth:`PrefixCache.check_weights`
clears the cache when the model's parameters were replaced or changed in place (an optimiser step), moved to
another device or dtype, or its peft adapters were switched, disabled or merged. Call it before each use.

Example:
    >>> import torch
    >>> cache = PrefixCache(max_tokens=100)
    >>> keys_values = [(torch.zeros(1, 2, 5, 4), torch.ones(1, 2, 5, 4))]  # one layer, 5 tokens
    >>> cache.store([1, 2, 3, 4, 5], keys_values)
    >>> hit = cache.match([1, 2, 3, 9])
    >>> hit.length, tuple(hit.layers[0][0].shape), cache.tokens
    (3, (1, 2, 3, 4), 5)
    >>> cache.match([7, 8]).length
    0
"""

from __future__ import annotations

import inspect
import itertools
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

__all__ = ["CachedPrefix", "PrefixCache", "cache_layers", "weights_state"]

#: Per-layer ``(keys, values)``, each ``(1, kv_heads, tokens, head_dim)``.
Layers = tuple[tuple[torch.Tensor, torch.Tensor], ...]


@dataclass(frozen=True)
class CachedPrefix:
    """The keys and values of a sequence's first ``length`` tokens (no layers when ``length`` is 0)."""

    #: How many leading tokens the keys and values cover.
    length: int
    #: Per-layer ``(keys, values)``, shared with the cache: extend them (a forward concatenates), never write them.
    layers: Layers

    def dynamic_cache(self, config: Any = None) -> DynamicCache:
        """Return a ``transformers.DynamicCache`` holding these keys and values, for a forward to extend.

        A forward given it runs the tokens after ``length`` at positions ``length, length + 1, ...``; a
        ``DynamicCache`` grows by concatenation, so the cached tensors stay as they are.
        """
        return DynamicCache(self.layers, config=config) if self.length else DynamicCache(config=config)


@dataclass
class _Entry:
    ids: np.ndarray
    layers: Layers


class PrefixCache:
    """Keys and values of token sequences, matched by longest common token prefix, at most ``max_tokens`` held.

    See the module's docstring for how it is matched, bounded and kept valid.

    Example:
        >>> import torch
        >>> cache = PrefixCache(max_tokens=8)
        >>> layer = lambda n: [(torch.zeros(1, 1, n, 2), torch.zeros(1, 1, n, 2))]
        >>> cache.store([1, 2, 3], layer(3))
        >>> cache.store([1, 2, 3, 4, 5], layer(5))  # extends the first entry, which is dropped
        >>> len(cache), cache.tokens
        (1, 5)
        >>> cache.store([6, 7, 8, 9], layer(4))  # 9 tokens > 8: the least recently used entry goes
        >>> len(cache), cache.tokens, cache.match([1, 2]).length
        (1, 4, 0)
    """

    def __init__(self, max_tokens: int) -> None:
        """Hold at most ``max_tokens`` tokens (0: hold nothing, match nothing).

        Raises:
            ValueError: when ``max_tokens`` is negative.
        """
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # least recently used first
        self._keys = itertools.count()
        self._tokens = 0
        self._weights: tuple[Any, ...] | None = None
        self.max_tokens = max_tokens

    @property
    def max_tokens(self) -> int:
        """The most tokens held over all entries; lowering it evicts least recently used entries, 0 empties."""
        return self._max_tokens

    @max_tokens.setter
    def max_tokens(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"`max_tokens` should be 0 (off) or a positive number of tokens. Received {value}.")
        self._max_tokens = value
        self._evict()

    @property
    def tokens(self) -> int:
        """Tokens held, over all entries."""
        return self._tokens

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor storages the entries keep alive (``tokens`` x the bytes of a token's keys and values)."""
        tensors = [t for entry in self._entries.values() for layer in entry.layers for t in layer]
        return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())

    def __len__(self) -> int:
        """Return the number of entries."""
        return len(self._entries)

    def clear(self) -> None:
        """Drop every entry."""
        self._entries.clear()
        self._tokens = 0

    def check_weights(self, model: torch.nn.Module) -> None:
        """Clear the cache when ``model``'s :func:`weights_state` differs from the last call's (then remember it)."""
        state = weights_state(model)
        if state != self._weights:
            self.clear()
            self._weights = state

    def match(self, token_ids: Sequence[int], limit: int | None = None) -> CachedPrefix:
        """Return the longest cached prefix of ``token_ids[:limit]`` (length 0 when none); it becomes most recent.

        ``limit`` keeps tokens for the caller's forward to run (a classifier reads its head at the last one).
        """
        query = np.asarray(token_ids[:limit], dtype=np.int64)
        best_key, best = -1, 0
        for key, entry in self._entries.items():
            common = _common_length(entry.ids, query)
            if common > best:
                best_key, best = key, common
        if not best:
            return CachedPrefix(0, ())
        self._entries.move_to_end(best_key)
        layers = self._entries[best_key].layers
        return CachedPrefix(best, tuple((keys[..., :best, :], values[..., :best, :]) for keys, values in layers))

    def store(
        self, token_ids: Sequence[int], layers: DynamicCache | Sequence[tuple[torch.Tensor, torch.Tensor]]
    ) -> None:
        """Keep the keys and values of ``token_ids`` (``layers`` may cover more tokens: the first ones are kept).

        Nothing is stored when the sequence is longer than ``max_tokens`` or already held (as a prefix of an
        entry, which becomes most recent); entries that are prefixes of it are dropped.

        Raises:
            ValueError: when ``layers`` hold a batch of several rows, or fewer tokens than ``token_ids``.
        """
        length = len(token_ids)
        if not 0 < length <= self.max_tokens:
            return
        if isinstance(layers, DynamicCache):
            layers = cache_layers(layers)
        for keys, _ in layers:
            if keys.shape[0] != 1 or keys.shape[-2] < length:
                raise ValueError(
                    f"Keys and values to store should be (1, heads, tokens, dim) with at least {length} tokens; "
                    f"received {tuple(keys.shape)}. Store one row at a time, with the tokens it covers."
                )
        ids = np.asarray(token_ids, dtype=np.int64)
        for key, entry in list(self._entries.items()):
            common = _common_length(entry.ids, ids)
            if common == length:  # held already; no entry is a prefix of another, so nothing else to drop
                self._entries.move_to_end(key)
                return
            if common == len(entry.ids):
                del self._entries[key]
                self._tokens -= common
        owned = tuple((_owned(keys, length), _owned(values, length)) for keys, values in layers)
        self._entries[next(self._keys)] = _Entry(ids, owned)
        self._tokens += length
        self._evict()

    def _evict(self) -> None:
        while self._tokens > self._max_tokens:
            _, entry = self._entries.popitem(last=False)
            self._tokens -= len(entry.ids)


def cache_layers(cache: DynamicCache) -> Layers:
    """Return a ``DynamicCache``'s per-layer ``(keys, values)`` (full-attention layers only have them)."""
    layers: Any = cache.layers
    return tuple((layer.keys, layer.values) for layer in layers)


def weights_state(model: torch.nn.Module) -> tuple[Any, ...]:
    """Return what a model's keys and values depend on besides the tokens, as a value that changes with it.

    Each parameter's storage address and in-place version counter (replaced, moved, cast or stepped by an
    optimiser), and each peft adapter layer's state (disabled, which adapters are active, merged).
    """
    parameters = tuple((p.data_ptr(), p._version) for p in model.parameters())
    adapters = tuple(
        (module.disable_adapters, str(module.active_adapters), getattr(module, "merged", None))
        for module in model.modules()
        if hasattr(module, "disable_adapters")
    )
    return parameters + adapters


def _owned(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """Return the first ``length`` tokens of ``tensor``, copied when a view would keep a larger storage alive."""
    tensor = tensor.detach()[..., :length, :]
    if tensor.untyped_storage().nbytes() > tensor.nbytes:
        return tensor.clone(memory_format=torch.contiguous_format)
    return tensor


def _common_length(a: np.ndarray, b: np.ndarray) -> int:
    """Return how many leading token ids ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


def reuse_unsupported(name: str, config: Any, forward: Any, arguments: Collection[str]) -> str | None:
    """Return why a model cannot run from a cached prefix (one phrase), or ``None`` when it can.

    What the reward model's shared-prefix scoring and the policy's prompt reuse both need: a decoder (not an
    encoder-decoder) whose ``forward`` takes ``arguments`` (a key/value ``cache``, position ids, ...), attention
    that takes a 4D mask (``sdpa``, ``eager``: not flash or flex), and full attention in every layer (no
    sliding window).

    Args:
        name: The model's class name, for the phrase.
        config: Its config.
        forward: The forward that will run from the cache (the model's, or its backbone's).
        arguments: The arguments that forward must take.
    """
    if getattr(config, "is_encoder_decoder", False):
        return f"{name} is an encoder-decoder"
    missing = sorted(set(arguments) - set(inspect.signature(forward).parameters))
    if missing:
        return f"{name}'s forward takes no {', '.join(missing)}"
    if config._attn_implementation not in ("sdpa", "eager"):
        return f"{name} runs {config._attn_implementation} attention, which takes no 4D mask"
    if any(type(layer) is not DynamicLayer for layer in DynamicCache(config=config).layers):
        return f"{name} has sliding-window or other non-full attention layers"
    return None
