"""A causal LM reads each prompt once: its answers run as suffixes after it, and a cached prefix is not re-read.

A policy that ranks commands (:class:`~prm_gym.agents.hf_agent.HFAgent`'s loglik mode) needs log p(answer |
prompt) for the answer of every admissible command (``ACTION: <command>`` and the template's end of turn, ~10-20
tokens) after a prompt of ~500-2,000 tokens, at each state of a lockstep group of games. :func:`score_answers`
runs each prompt from the end of its cached prefix on (renders are append-only, so the previous turn's prompt
and answer, when a prefix cache holds their keys and values, are the start of this turn's prompt), and all its
answers in the same row after it as a token trie (:class:`~prm_gym.prm.token_trie.TokenTrie`: answers that
start alike, ``ACTION: go to ...``, share those tokens, about half of ALFWorld's answer tokens), each token at
the position it has in its answers and seeing the prompt and its own ancestors only (a 4D mask); the states of
one call are the rows of one batch, their cached prefixes left-padded to a common length and masked. The
log-likelihoods are the full forwards' (prompt + answer, one per command) up to rounding, and the keys and
values of each prompt (and of each answer after it) come back for the next turn. :func:`unsupported` says why a
model cannot be run this way; such models get full forwards.

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
from prm_gym.prm.token_trie import TokenTrie, additive_mask

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
    #: The prompt's slots in the batch's keys and values (its cached prefix, then its new tokens), and each
    #: answer's: its trie nodes', in order.
    _prompt_slots: torch.Tensor = field(repr=False)
    _answer_slots: tuple[torch.Tensor, ...] = field(repr=False)

    def prefix(self, answer: int | None = None) -> Layers:
        """Return the keys and values of the prompt, followed by those of ``answer`` (an index) when given."""
        slots = self._prompt_slots if answer is None else torch.cat([self._prompt_slots, self._answer_slots[answer]])
        return [
            (
                keys[self._row : self._row + 1].index_select(2, slots.to(keys.device)),
                values[self._row : self._row + 1].index_select(2, slots.to(values.device)),
            )
            for keys, values in self._layers
        ]


def score_answers(
    model: Any, rows: Sequence[PromptRow], answers: Sequence[Sequence[Sequence[int]]], max_batch_tokens: int
) -> list[ScoredPrompt]:
    """Return, for each prompt row, log p(answer | prompt) of each of its answers and the keys and values left.

    ``model`` is a causal LM that :func:`unsupported` accepts. The rows run in batches of at most
    ``max_batch_tokens`` padded tokens (cached prefix, new prompt tokens and answers; a longer row goes alone),
    each row holding the prompt's tokens after its cached prefix and the trie of its answers after them, so a
    prompt is read once however many answers it has, and the tokens its answers start with once too. Rows
    without answers only extend their cache (for generation). Call it under ``torch.inference_mode()`` with the
    model in eval mode.

    Raises:
        ValueError: when a prompt is empty or an answer has no tokens.
    """
    if len(rows) != len(answers):
        raise ValueError(f"Got {len(rows)} prompt rows but answers for {len(answers)}: give one list per row.")
    for i, (row, row_answers) in enumerate(zip(rows, answers, strict=True)):
        if not row.ids or any(not answer for answer in row_answers):
            raise ValueError(f"rows[{i}] has an empty prompt or an empty answer: each needs at least one token.")
    scored: list[ScoredPrompt | None] = [None] * len(rows)
    tries = [TokenTrie() for _ in answers]
    paths = [[trie.add(answer) for answer in row_answers] for trie, row_answers in zip(tries, answers, strict=True)]
    lengths = [len(row.ids) + len(trie) for row, trie in zip(rows, tries, strict=True)]
    for batch in token_batches(lengths, max_batch_tokens):
        results = _score_batch(model, [rows[i] for i in batch], [tries[i] for i in batch], [paths[i] for i in batch])
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


def _score_batch(
    model: Any, rows: list[PromptRow], tries: list[TokenTrie], paths: list[list[list[int]]]
) -> list[ScoredPrompt]:
    """Score one batch: a row is [left-padded cached prefix | left-padded new prompt tokens | answer trie, padded].

    Every row's new prompt tokens end at the same index ``new``, so the logits read (the last prompt token's and
    the trie nodes') are the last ``nodes + 1`` of each row: ``logits_to_keep`` projects only those. A node's
    token is predicted by its parent's logits (the last prompt token's for a first token), once for every answer
    through it; an answer's log-likelihood is the sum over its ``paths`` entry (its nodes).
    """
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    cached = [min(row.cached, len(row.ids) - 1) if row.layers is not None else 0 for row in rows]
    fresh = [list(row.ids[c:]) for row, c in zip(rows, cached, strict=True)]
    width, new = max(cached), max(map(len, fresh))
    suffix = max(map(len, tries))
    ids = torch.zeros(len(rows), new + suffix, dtype=torch.long)
    # Per slot (cache then input): its position in the full sequence and its segment (-1 pad, 0 prompt, 1 trie
    # node). A prompt token sees the prompt up to itself; a node sees the whole prompt and its own ancestry.
    positions = torch.zeros(len(rows), width + new + suffix, dtype=torch.long)
    segments = torch.full_like(positions, -1)
    targets: list[tuple[int, int, int, int]] = []  # (row, node, logit index, token)
    for b, (row, trie) in enumerate(zip(rows, tries, strict=True)):
        c, n, m = cached[b], len(fresh[b]), len(trie)
        positions[b, width - c : width] = torch.arange(c)
        segments[b, width - c : width] = 0
        ids[b, new - n : new] = torch.tensor(fresh[b])
        positions[b, width + new - n : width + new] = torch.arange(c, c + n)
        segments[b, width + new - n : width + new] = 0
        if m:
            ids[b, new : new + m] = torch.tensor(trie.tokens)
            positions[b, width + new : width + new + m] = len(row.ids) + torch.tensor(trie.depths)
            segments[b, width + new : width + new + m] = 1
        # Kept logits start at the last prompt token (input index new - 1): node i sits at input index new + i, so
        # its parent p predicts it at kept index p + 1, the last prompt token (p = -1) at 0.
        targets += [(b, node, parent + 1, token)
                    for node, (parent, token) in enumerate(zip(trie.parents, trie.tokens, strict=True))]  # fmt: skip
    queries = slice(width, None)
    allowed = (
        (segments[:, None, :] == 0)
        & (positions[:, None, :] <= positions[:, queries, None])
        & (segments[:, queries, None] >= 0)
    )
    for b, trie in enumerate(tries):
        allowed[b, new : new + len(trie), width + new : width + new + len(trie)] = trie.ancestry()
    allowed[:, torch.arange(new + suffix), width + torch.arange(new + suffix)] = True  # padding sees itself
    mask = additive_mask(allowed, dtype)[:, None]
    output = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions[:, queries].to(device),
        cache=padded_cache(model, [row.layers for row in rows], cached, width),
        use_cache=True,
        logits_to_keep=suffix + 1,
    )
    node_logprobs = [[0.0] * len(trie) for trie in tries]
    if targets:
        b_, node_, at, token = (torch.tensor(column) for column in zip(*targets, strict=True))
        logits = output.logits[b_.to(device), at.to(device)].float()
        token_logprobs = (logits.gather(-1, token.to(device)[:, None])[:, 0] - logits.logsumexp(-1)).tolist()
        for b, node, value in zip(b_.tolist(), node_.tolist(), token_logprobs, strict=True):
            node_logprobs[b][node] = value
    layers = [(layer.keys, layer.values) for layer in output.cache.layers]
    return [
        ScoredPrompt(
            [sum(node_logprobs[b][node] for node in path) for path in paths[b]],
            layers,
            b,
            torch.cat([torch.arange(width - cached[b], width), torch.arange(width + new - len(fresh[b]), width + new)]),
            tuple(torch.tensor(path, dtype=torch.long) + width + new for path in paths[b]),
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
