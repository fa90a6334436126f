"""A causal LM reads each prompt once: its answers run as suffixes after it, and a cached prefix is not re-read.

A policy that ranks commands (:class:`~prm_gym.agents.hf_agent.HFAgent`'s loglik mode) needs log p(answer |
prompt) for the answer of every admissible command (``ACTION: <command>`` and the template's end of turn, ~10-20
tokens) after a prompt of ~500-2,000 tokens, at each state of a lockstep group of games. :func:`score_answers`
runs each prompt from the end of its cached prefix on (renders are append-only, so the previous turn's prompt
and answer, when a prefix cache holds their keys and values, are the start of this turn's prompt), and all its
answers in the same row after it, packed end to end, each at the positions it has right after the prompt and
masked from the other answers (a 4D mask); the states of one call are the rows of one batch, their cached
prefixes left-padded to a common length and masked. The log-likelihoods are the full forwards' (prompt +
answer, one per command) up to rounding, and the keys and values of each prompt (and of each answer after it)
come back for the next turn. :func:`unsupported` says why a model cannot be run this way; such models get full
forwards.

Example:
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> _ = torch.manual_seed(0)
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
    ...                                      num_hidden_layers=1, num_attention_heads=2)).eval()
    >>> prompt, answers = [1, 5, 7, 9], [[3, 4], [6]]
    >>> with torch.inference_mode():
    ...     (scored,) = score_answers(model, [PromptRow(prompt)], [answers], max_batch_tokens=64)
    ...     full = model(input_ids=torch.tensor([prompt + answers[1]])).logits[0].log_softmax(-1)
    >>> abs(scored.logprobs[1] - full[3, 6].item()) < 1e-5, scored.prefix(0)[0][0].shape[2]
    (True, 6)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from prm_gym.checkpoints import token_batches
from prm_gym.prm.prefix_cache import reuse_unsupported

__all__ = [
    "Layers",
    "PromptRow",
    "ScoredPrompt",
    "full_answer_logprobs",
    "padded_cache",
    "score_answers",
    "unsupported",
]

#: Keys and values of a token prefix: one ``(keys, values)`` pair per layer, each ``(1, kv_heads, tokens, dim)``.
Layers = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class PromptRow:
    """A prompt's token ids and, when a cache holds them, the keys and values of its first ``cached`` tokens."""

    #: The prompt's token ids.
    ids: Sequence[int]
    #: How many leading ids ``layers`` covers (at most ``len(ids) - 1`` is used: the last token is always run).
    cached: int = 0
    #: Their keys and values, or ``None``.
    layers: Layers | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ScoredPrompt:
    """The answers' log-likelihoods after one prompt, and the keys and values the forward left for the next turn."""

    #: log p(answer | prompt) per answer: the sum over its tokens.
    logprobs: list[float]
    _layers: Layers = field(repr=False)
    _row: int = field(repr=False)
    _prompt_slots: tuple[slice, slice] = field(repr=False)
    _answer_slots: tuple[slice, ...] = field(repr=False)

    def prefix(self, answer: int | None = None) -> Layers:
        """Return the keys and values of the prompt, followed by those of ``answer`` (an index) when given."""
        slots = [*self._prompt_slots, *([] if answer is None else [self._answer_slots[answer]])]
        return [
            (
                torch.cat([keys[self._row : self._row + 1, :, slot] for slot in slots], dim=2),
                torch.cat([values[self._row : self._row + 1, :, slot] for slot in slots], dim=2),
            )
            for keys, values in self._layers
        ]


def score_answers(
    model: Any, rows: Sequence[PromptRow], answers: Sequence[Sequence[Sequence[int]]], max_batch_tokens: int
) -> list[ScoredPrompt]:
    """Return, for each prompt row, log p(answer | prompt) of each of its answers and the keys and values left.

    ``model`` is a causal LM that :func:`unsupported` accepts. The rows run in batches of at most
    ``max_batch_tokens`` padded tokens (cached prefix, new prompt tokens and answers; a longer row goes alone),
    each row holding the prompt's tokens after its cached prefix and all its answers packed after them, so a
    prompt is read once however many answers it has. Rows without answers only extend their cache (for
    generation). Call it under ``torch.inference_mode()`` with the model in eval mode.

    Raises:
        ValueError: when a prompt is empty or an answer has no tokens.
    """
    if len(rows) != len(answers):
        raise ValueError(f"Got {len(rows)} prompt rows but answers for {len(answers)}: give one list per row.")
    for i, (row, row_answers) in enumerate(zip(rows, answers, strict=True)):
        if not row.ids or any(not answer for answer in row_answers):
            raise ValueError(f"rows[{i}] has an empty prompt or an empty answer: each needs at least one token.")
    scored: list[ScoredPrompt | None] = [None] * len(rows)
    lengths = [len(row.ids) + sum(map(len, row_answers)) for row, row_answers in zip(rows, answers, strict=True)]
    for batch in token_batches(lengths, max_batch_tokens):
        results = _score_batch(model, [rows[i] for i in batch], [answers[i] for i in batch])
        for i, result in zip(batch, results, strict=True):
            scored[i] = result
    return [result for result in scored if result is not None]


def full_answer_logprobs(
    model: Any, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[Sequence[int]]], max_batch_tokens: int
) -> list[list[float]]:
    """Return log p(answer | prompt) for each answer of each prompt by full forwards of prompt + answer (no reuse).

    The reference :func:`score_answers` is measured against, and the path of models :func:`unsupported` refuses.
    Rows are left-padded (positions from the mask) in batches of at most ``max_batch_tokens`` padded tokens, so
    every row's answer ends the batch and only the answers' logits are projected. Call it under
    ``torch.inference_mode()`` with the model in eval mode.
    """
    device = next(model.parameters()).device
    pairs = [(i, j) for i, row_answers in enumerate(answers) for j in range(len(row_answers))]
    rows = [[*prompts[i], *answers[i][j]] for i, j in pairs]
    logprobs = [[0.0] * len(row_answers) for row_answers in answers]
    for batch in token_batches([len(row) for row in rows], max_batch_tokens):
        length = max(len(rows[r]) for r in batch)
        keep = max(len(answers[i][j]) for i, j in (pairs[r] for r in batch)) + 1
        ids = torch.zeros(len(batch), length, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, r in enumerate(batch):
            ids[b, length - len(rows[r]) :] = torch.tensor(rows[r])
            mask[b, length - len(rows[r]) :] = 1
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        logits = model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            logits_to_keep=keep,
        ).logits.float()
        for b, r in enumerate(batch):
            i, j = pairs[r]
            answer = torch.tensor(list(answers[i][j]), device=device)
            # Answer token k sits at index length - m + k and is predicted one earlier: kept index keep - m - 1 + k.
            at = torch.arange(keep - len(answer) - 1, keep - 1, device=device)
            token_logprobs = logits[b, at].gather(-1, answer[:, None])[:, 0] - logits[b, at].logsumexp(-1)
            logprobs[i][j] = token_logprobs.sum().item()
    return logprobs


def unsupported(model: Any) -> str | None:
    """Return why ``model``'s prompts cannot be reused this way (one phrase), or ``None`` when they can.

    Supported: decoder-only causal LMs whose forward takes a key/value ``cache``, position ids, a 4D attention
    mask (the ``sdpa`` and ``eager`` attention implementations) and ``logits_to_keep``, with full attention in
    every layer (Llama, Qwen2, Mistral, SmolLM2, ...). Not supported: encoder-decoders, flash or flex attention,
    sliding-window layers.
    """
    arguments = ("cache", "position_ids", "logits_to_keep")
    return reuse_unsupported(type(model).__name__, model.config, model.forward, arguments)


def _score_batch(model: Any, rows: list[PromptRow], answers: list[Sequence[Sequence[int]]]) -> list[ScoredPrompt]:
    """Score one batch: a row is [left-padded cached prefix | left-padded new prompt tokens | answers, padded].

    Every row's new prompt tokens end at the same index ``new``, so the logits read (the last prompt token's and
    the answers') are the last ``answers + 1`` of each row: ``logits_to_keep`` projects only those.
    """
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    cached = [min(row.cached, len(row.ids) - 1) if row.layers is not None else 0 for row in rows]
    fresh = [list(row.ids[c:]) for row, c in zip(rows, cached, strict=True)]
    width, new = max(cached), max(map(len, fresh))
    suffix = max(sum(map(len, row_answers)) for row_answers in answers)
    ids = torch.zeros(len(rows), new + suffix, dtype=torch.long)
    # Per slot (cache then input): its position in the full sequence and its segment (-1 pad, 0 prompt, j + 1
    # answer j). A query sees a slot that is not padding, not after it, and in the prompt or its own answer.
    positions = torch.zeros(len(rows), width + new + suffix, dtype=torch.long)
    segments = torch.full_like(positions, -1)
    targets: list[tuple[int, int, int, int]] = []  # (row, answer, logit index, token)
    answer_slots: list[tuple[slice, ...]] = []
    for b, (row, row_answers) in enumerate(zip(rows, answers, strict=True)):
        c, n = cached[b], len(fresh[b])
        positions[b, width - c : width] = torch.arange(c)
        segments[b, width - c : width] = 0
        ids[b, new - n : new] = torch.tensor(fresh[b])
        positions[b, width + new - n : width + new] = torch.arange(c, c + n)
        segments[b, width + new - n : width + new] = 0
        start, slots = new, []
        for j, answer in enumerate(row_answers):
            end = start + len(answer)
            ids[b, start:end] = torch.tensor(list(answer))
            positions[b, width + start : width + end] = torch.arange(len(row.ids), len(row.ids) + len(answer))
            segments[b, width + start : width + end] = j + 1
            slots.append(slice(width + start, width + end))
            # Kept logits start at the last prompt token (input index new - 1): token k of the answer is
            # predicted at input index start + k - 1 for k > 0, by the last prompt token for k = 0.
            targets += [(b, j, 0 if k == 0 else start + k - new, token) for k, token in enumerate(answer)]
            start = end
        answer_slots.append(tuple(slots))
    queries = slice(width, None)
    allowed = (
        (segments[:, None, :] >= 0)
        & (positions[:, None, :] <= positions[:, queries, None])
        & ((segments[:, None, :] == 0) | (segments[:, None, :] == segments[:, queries, None]))
    )
    allowed[:, torch.arange(new + suffix), width + torch.arange(new + suffix)] = True  # padding sees itself
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
    output = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions[:, queries].to(device),
        cache=padded_cache(model, [row.layers for row in rows], cached, width),
        use_cache=True,
        logits_to_keep=suffix + 1,
    )
    logprobs = [[0.0] * len(row_answers) for row_answers in answers]
    if targets:
        b_, j_, at, token = (torch.tensor(column) for column in zip(*targets, strict=True))
        logits = output.logits[b_.to(device), at.to(device)].float()
        token_logprobs = (logits.gather(-1, token.to(device)[:, None])[:, 0] - logits.logsumexp(-1)).tolist()
        for b, j, value in zip(b_.tolist(), j_.tolist(), token_logprobs, strict=True):
            logprobs[b][j] += value
    layers = [(layer.keys, layer.values) for layer in output.cache.layers]
    return [
        ScoredPrompt(
            logprobs[b],
            layers,
            b,
            (slice(width - cached[b], width), slice(width + new - len(fresh[b]), width + new)),
            answer_slots[b],
        )
        for b in range(len(rows))
    ]


def padded_cache(model: Any, layers: Sequence[Layers | None], lengths: Sequence[int], width: int) -> DynamicCache:
    """Return one batch cache of ``width`` slots, row ``b`` the first ``lengths[b]`` slots of ``layers[b]``.

    Rows are left-padded with zeros, to be masked (as ``generate`` masks left-padded prompts).
    """
    cache = DynamicCache(config=model.config)
    known = [row for row in layers if row is not None]
    if width == 0 or not known:
        return cache
    batch_layers = []
    for index, (keys, values) in enumerate(known[0]):
        pair = (
            keys.new_zeros(len(layers), keys.shape[1], width, keys.shape[3]),
            values.new_zeros(len(layers), values.shape[1], width, values.shape[3]),
        )
        for b, row in enumerate(layers):
            if row is not None and lengths[b]:
                for part in (0, 1):
                    pair[part][b, :, width - lengths[b] :] = row[index][part][0, :, : lengths[b]]
        batch_layers.append(pair)
    return DynamicCache(batch_layers, config=model.config)
