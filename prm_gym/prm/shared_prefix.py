"""Shared-prefix scoring: read a common token prefix once, then every context's differing tail against its cache.

The N candidate actions of one state render to the same tokens up to the proposed action (system prompt, task,
history, current observation: ~500-2,000 tokens), then differ in a tail of ~5-20 tokens (the action and the
template's closing tokens). :func:`plan_groups` finds such groups among the token rows of one ``score`` call;
:func:`group_logits` runs a group's prefix once through the backbone, then its suffixes through it in
one row, packed end to end, against the prefix's keys and values (a ``transformers.DynamicCache``), each at
the positions it has in its full row and masked from the other suffixes, and reads the one-logit ``score``
head at each suffix's last real token: the logit a full forward of the row gives. Given a
:class:`~prm_gym.prm.prefix_cache.PrefixCache`, the prefix runs only after its longest cached prefix (the
previous turn's, in an episode) and is stored for later calls. :func:`unsupported` says why
a model cannot be scored this way (encoders, models without a key/value cache, flash attention, sliding-window
layers, peft prompt learning); such models get full forwards.

Example:
    >>> rows = [[1] * 200 + [5, 6], [1] * 200 + [7], [2, 3, 4]]
    >>> plan_groups(rows, pad_token_id=0)
    ([PrefixGroup(prefix=200, rows=(0, 1))], [2])
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from prm_gym.prm.prefix_cache import CachedPrefix, PrefixCache, cache_layers, reuse_unsupported
from prm_gym.prm.token_trie import additive_mask

__all__ = ["MIN_SHARED_TOKENS", "PrefixGroup", "group_logits", "plan_groups", "unsupported"]

#: Fewest shared tokens worth a prefix forward of their own; shorter common prefixes (the system prompt alone,
#: ~100 tokens, is what contexts of different games share) are scored by full forwards.
MIN_SHARED_TOKENS = 128


@dataclass(frozen=True)
class PrefixGroup:
    """Rows (indices into the token rows) whose first ``prefix`` token ids are the same."""

    #: How many leading token ids the rows share (each row still has at least its last real token after them).
    prefix: int
    #: The rows, in lexicographic order of their token ids.
    rows: tuple[int, ...]


def plan_groups(
    token_ids: Sequence[Sequence[int]],
    pad_token_id: int | None,
    min_tokens: int = MIN_SHARED_TOKENS,
    *,
    singletons: bool = False,
) -> tuple[list[PrefixGroup], list[int]]:
    """Return the groups of rows worth scoring on a shared prefix, and the rows left to full forwards.

    Rows are sorted by their token ids, so that rows with long common prefixes are neighbours; a row joins the
    group before it when that lowers the tokens to compute (a group of ``k`` rows with prefix ``P`` computes
    ``P + sum(len - P)`` tokens), and the group's prefix stays at least ``min_tokens`` long. A group's prefix
    always ends before each row's last real token (the last one that is not ``pad_token_id``, where a
    classifier reads its head), so every row keeps a suffix to run. Greedy in that order, not optimal: a row
    joins the best neighbour group it meets, which is the right one for the N candidates of a state. With
    ``singletons``, a row that joins no group is a group of its own, on all its tokens but the last real one
    (for a :class:`~prm_gym.prm.prefix_cache.PrefixCache` to serve and keep); rows of one real token stay alone.

    Example:
        >>> plan_groups([[1, 2, 3, 4], [7, 8], [1, 2, 3, 5]], pad_token_id=0, min_tokens=2)
        ([PrefixGroup(prefix=3, rows=(0, 2))], [1])
    """
    order = sorted(range(len(token_ids)), key=lambda row: list(token_ids[row]))
    shareable = [_last_real(row, pad_token_id) for row in token_ids]
    groups: list[list[int]] = []
    prefixes: list[int] = []
    for row in order:
        if groups:
            members, prefix = groups[-1], prefixes[-1]
            common = min(prefix, shareable[row], _common_length(token_ids[members[-1]], token_ids[row]))
            # Joining k rows of prefix P at prefix L saves k*L - (k-1)*P tokens against a fresh group.
            if common >= min_tokens and len(members) * common > (len(members) - 1) * prefix:
                members.append(row)
                prefixes[-1] = common
                continue
        groups.append([row])
        prefixes.append(shareable[row])
    shared, alone = [], []
    for rows, prefix in zip(groups, prefixes, strict=True):
        if len(rows) > 1 or (singletons and prefix > 0):
            shared.append(PrefixGroup(prefix, tuple(rows)))
        else:
            alone.append(rows[0])
    return shared, sorted(alone)


def group_logits(
    model: Any,
    token_ids: Sequence[Sequence[int]],
    group: PrefixGroup,
    max_batch_tokens: int,
    cache: PrefixCache | None = None,
) -> list[float]:
    """Return the head's logit for each row of ``group`` (in ``group.rows`` order), reading the prefix once.

    ``model`` is a decoder sequence classifier that :func:`unsupported` accepts, or a peft model around one.
    The prefix runs alone through the backbone and leaves its keys and values in a cache; with a ``cache``, only
    the prefix's tokens after its longest cached prefix run (against the cached keys and values), and the
    prefix's keys and values are stored back for later calls (the next turn of the episode). The
    suffixes (each row from the prefix's end to its last real token) then run packed end to end in one row of at
    most ``max_batch_tokens`` tokens, through the backbone, against that cache: each suffix token sees the whole
    prefix and its own suffix's earlier tokens (a 4D mask), at the positions it has in its full row. The one-logit
    ``score`` head is read at each suffix's last token. Packing keeps one copy of the prefix's keys and values
    (a batch of suffixes would need one per row, and copying those costs more than the suffixes' arithmetic).
    Call it under ``torch.inference_mode()`` with the model in eval mode, after ``cache.check_weights(model)``.
    """
    classifier = decoder_classifier(model)
    backbone = getattr(classifier, classifier.base_model_prefix)
    pad = classifier.config.get_text_config().pad_token_id
    device = next(classifier.parameters()).device
    layers = _prefix_layers(backbone, list(token_ids[group.rows[0]][: group.prefix]), cache)
    suffixes = [list(token_ids[row][group.prefix : _last_real(token_ids[row], pad) + 1]) for row in group.rows]
    logits: list[float] = []
    for pack in _packs([len(suffix) for suffix in suffixes], max_batch_tokens):
        packed = [suffixes[i] for i in pack]
        ends = torch.tensor([len(suffix) for suffix in packed]).cumsum(0)
        ids = torch.tensor([[token for suffix in packed for token in suffix]], device=device)
        positions = torch.cat([torch.arange(group.prefix, group.prefix + len(suffix)) for suffix in packed])
        hidden = backbone(
            input_ids=ids,
            attention_mask=_pack_mask(ends, group.prefix, backbone.dtype).to(device),
            position_ids=positions.unsqueeze(0).to(device),
            cache=layers.dynamic_cache(backbone.config),  # a fresh one per pack: the forward appends to it
            use_cache=True,
        ).last_hidden_state
        logits += classifier.score(hidden[0, (ends - 1).to(device)]).squeeze(-1).float().tolist()
    return logits


def unsupported(model: Any) -> str | None:
    """Return why ``model`` cannot be scored on shared prefixes (one phrase), or ``None`` when it can.

    Supported: decoder sequence classifiers whose one-logit ``score`` layer is read at the last token that is not
    the pad token (transformers' ``*ForSequenceClassification`` of Llama, Qwen2, Mistral, GPT-2, SmolLM2, ...),
    whose backbone takes a key/value ``cache``, position ids and a 4D attention mask (the ``sdpa`` and ``eager``
    attention implementations), with full attention in every layer; also inside a peft model with adapters
    such as LoRA. Not supported: encoders (BERT reads its first token and keeps no cache), encoder-decoders,
    flash or flex attention, sliding-window layers, peft prompt learning (virtual tokens before the input).
    """
    peft = sys.modules.get("peft")  # a peft model exists only once peft is imported
    if peft is not None and isinstance(model, peft.PeftModel) and model.active_peft_config.is_prompt_learning:
        return "its peft adapter is prompt learning (virtual tokens before the input)"
    classifier = decoder_classifier(model)
    name = type(classifier).__name__
    config = classifier.config
    backbone = getattr(classifier, getattr(classifier, "base_model_prefix", ""), None)
    if getattr(config, "is_encoder_decoder", False):
        return f"{name} is an encoder-decoder"
    if not isinstance(getattr(classifier, "score", None), torch.nn.Module) or backbone is None:
        return f"{name} has no decoder `score` head read at the last token (an encoder reads its first token)"
    if config.get_text_config().pad_token_id is None:
        return f"{name} has no pad token id (its head is read at the last token that is not the pad token)"
    return reuse_unsupported(f"{name}'s backbone", backbone.config, backbone.forward, ("cache", "position_ids"))


def _prefix_layers(backbone: Any, prefix: list[int], cache: PrefixCache | None) -> CachedPrefix:
    """Return the keys and values of ``prefix``: its longest match in ``cache`` extended by a forward of the rest."""
    known = cache.match(prefix) if cache is not None else CachedPrefix(0, ())
    if known.length < len(prefix):
        device = backbone.get_input_embeddings().weight.device
        extended = known.dynamic_cache(backbone.config)
        backbone(
            input_ids=torch.tensor([prefix[known.length :]], device=device),
            position_ids=torch.arange(known.length, len(prefix), device=device).unsqueeze(0),
            cache=extended,
            use_cache=True,
        )
        known = CachedPrefix(len(prefix), cache_layers(extended))
    if cache is not None:
        cache.store(prefix, known.layers)
    return known


def _packs(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Return consecutive index runs of ``lengths`` whose sum stays within ``max_tokens`` (a longer one alone)."""
    packs: list[list[int]] = []
    total = 0
    for index, length in enumerate(lengths):
        if packs and total + length <= max_tokens:
            packs[-1].append(index)
            total += length
        else:
            packs.append([index])
            total = length
    return packs


def _pack_mask(ends: torch.Tensor, prefix: int, dtype: torch.dtype) -> torch.Tensor:
    """Return the additive 4D mask ``(1, 1, T, prefix + T)`` of suffixes packed end to end (``ends``: cumsum).

    A suffix token attends to every prefix token and to the tokens of its own suffix up to itself.
    """
    total = int(ends[-1])
    suffix_of = torch.repeat_interleave(
        torch.arange(len(ends)), torch.diff(ends, prepend=torch.zeros(1, dtype=ends.dtype))
    )
    index = torch.arange(total)
    allowed = (suffix_of[:, None] == suffix_of[None, :]) & (index[None, :] <= index[:, None])
    allowed = torch.cat([torch.ones(total, prefix, dtype=torch.bool), allowed], dim=1)
    return additive_mask(allowed, dtype)[None, None]


def decoder_classifier(model: Any) -> Any:
    """Return the transformers classifier itself: ``model``, or the model inside a peft wrapper (adapters on).

    Its backbone is ``getattr(classifier, classifier.base_model_prefix)`` and its one-logit head ``score``.
    """
    peft = sys.modules.get("peft")  # a peft model exists only once peft is imported
    return model.get_base_model() if peft is not None and isinstance(model, peft.PeftModel) else model


def _last_real(row: Sequence[int], pad_token_id: int | None) -> int:
    """Return the index of the row's last token that is not the pad token (0 if none): where the head is read."""
    for index in range(len(row) - 1, -1, -1):
        if row[index] != pad_token_id:
            return index
    return 0


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Return how many leading token ids ``a`` and ``b`` share."""
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length
