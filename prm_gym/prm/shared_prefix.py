"""Shared-prefix scoring: read a common token prefix once, then every context's differing tail against its cache.

The N candidate actions of one state render to the same tokens up to the proposed action (system prompt, task,
history, current observation: ~500-2,000 tokens), then differ in a tail of ~5-20 tokens (the action and the
template's closing tokens). :func:`plan_groups` finds such groups among the token rows of one ``score`` call;
:func:`group_logits` runs a group's prefix once through the decoder backbone, then its suffixes as right-padded
batches that attend to the prefix's keys and values (a ``transformers.DynamicCache`` expanded to the batch),
through the classifier's own forward, which reads its one-logit head at each suffix's last real token: the
logit a full forward of the row gives. :func:`unsupported` says why a model cannot be scored this way (encoders,
models without a key/value cache, sliding-window layers, peft prompt learning); such models get full forwards.

Example:
    >>> rows = [[1] * 200 + [5, 6], [1] * 200 + [7], [2, 3, 4]]
    >>> plan_groups(rows, pad_token_id=0)
    ([PrefixGroup(prefix=200, rows=(0, 1))], [2])
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from prm_gym.checkpoints import token_batches

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
    token_ids: Sequence[Sequence[int]], pad_token_id: int | None, min_tokens: int = MIN_SHARED_TOKENS
) -> tuple[list[PrefixGroup], list[int]]:
    """Return the groups of rows worth scoring on a shared prefix, and the rows left to full forwards.

    Rows are sorted by their token ids, so that rows with long common prefixes are neighbours; a row joins the
    group before it when that lowers the tokens to compute (a group of ``k`` rows with prefix ``P`` computes
    ``P + sum(len - P)`` tokens), and the group's prefix stays at least ``min_tokens`` long. A group's prefix
    always ends before each row's last real token (the last one that is not ``pad_token_id``, where a
    classifier reads its head), so every row keeps a suffix to run. Greedy in that order, not optimal: a row
    joins the best neighbour group it meets, which is the right one for the N candidates of a state.

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
    shared = [PrefixGroup(p, tuple(g)) for g, p in zip(groups, prefixes, strict=True) if len(g) > 1]
    alone = sorted(g[0] for g in groups if len(g) == 1)
    return shared, alone


def group_logits(
    model: Any, token_ids: Sequence[Sequence[int]], group: PrefixGroup, max_batch_tokens: int
) -> list[float]:
    """Return the head's logit for each row of ``group`` (in ``group.rows`` order), reading the prefix once.

    ``model`` is a decoder sequence classifier that :func:`unsupported` accepts, or a peft model around one; it
    runs through its own forward both times. The prefix runs alone; the suffixes (each row from the prefix's end
    to its last real token) run in right-padded batches of at most ``max_batch_tokens`` (prefix included: each
    row of a batch holds its own copy of the prefix's keys and values), at positions after the prefix, masked
    where padded, so that the classifier reads its head at each suffix's last real token. Call it under
    ``torch.inference_mode()`` with the model in eval mode.
    """
    pad = model.config.get_text_config().pad_token_id
    device = next(model.parameters()).device
    prefix = torch.tensor([list(token_ids[group.rows[0]][: group.prefix])], device=device)
    layers = [(layer.keys, layer.values) for layer in model(input_ids=prefix, use_cache=True).cache.layers]
    suffixes = [list(token_ids[row][group.prefix : _last_real(token_ids[row], pad) + 1]) for row in group.rows]
    logits = [0.0] * len(suffixes)
    for batch in token_batches([group.prefix + len(s) for s in suffixes], max_batch_tokens):
        width = len(suffixes[batch[0]])  # token_batches puts the longest row first
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), group.prefix + width), dtype=torch.long)
        mask[:, : group.prefix] = 1
        for i, row in enumerate(batch):
            ids[i, : len(suffixes[row])] = torch.tensor(suffixes[row])
            mask[i, group.prefix : group.prefix + len(suffixes[row])] = 1
        # A fresh cache per batch: the forward appends the suffixes' keys and values to the one it is given.
        cache = DynamicCache(
            [(k.expand(len(batch), -1, -1, -1), v.expand(len(batch), -1, -1, -1)) for k, v in layers],
            config=model.config,
        )
        positions = torch.arange(group.prefix, group.prefix + width, device=device).expand(len(batch), -1)
        output = model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions,
            cache=cache,
            use_cache=True,
        )
        for row, logit in zip(batch, output.logits.squeeze(-1).float().tolist(), strict=True):
            logits[row] = logit
    return logits


def unsupported(model: Any) -> str | None:
    """Return why ``model`` cannot be scored on shared prefixes (one phrase), or ``None`` when it can.

    Supported: decoder sequence classifiers that read their one-logit head at the last token that is not the
    pad token and take a key/value ``cache`` (transformers' ``*ForSequenceClassification`` of Llama, Qwen2,
    Mistral, GPT-2, SmolLM2, ...), with full attention in every layer; also inside a peft model with adapters
    such as LoRA. Not supported: encoders (BERT reads its first token and keeps no cache), encoder-decoders,
    sliding-window layers, peft prompt learning (virtual tokens before the input).
    """
    peft = sys.modules.get("peft")  # a peft model exists only once peft is imported
    if peft is not None and isinstance(model, peft.PeftModel):
        if model.active_peft_config.is_prompt_learning:
            return "its peft adapter is prompt learning (virtual tokens before the input)"
        model = model.get_base_model()
    name = type(model).__name__
    if getattr(model.config, "is_encoder_decoder", False):
        return f"{name} is an encoder-decoder"
    if model.config.get_text_config().pad_token_id is None:
        return f"{name} has no pad token id (its head is read at the last token that is not the pad token)"
    if "cache" not in inspect.signature(model.forward).parameters:
        return f"{name} takes no key/value cache (an encoder?)"
    if any(type(layer) is not DynamicLayer for layer in DynamicCache(config=model.config).layers):
        return f"{name} has sliding-window or other non-full attention layers"
    return None


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
