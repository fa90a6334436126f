"""Sentence embeddings from a local transformers model, as a :class:`~prm_gym.wrappers.text_features.TextFeaturizer`.

Needs the ``llm`` extra (torch, transformers); :mod:`prm_gym.wrappers` imports this module on first use only.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

try:
    import torch
except ImportError as err:  # pragma: no cover - depends on the installed extras
    raise ImportError("Sentence embeddings need the `llm` extra: pip install 'prm-gym[llm]'") from err

from prm_gym.checkpoints import ensure_pad_token, load_pretrained, resolve_source, token_batches
from prm_gym.devices import resolve_device, resolve_dtype

__all__ = ["TransformerEmbeddings"]


class TransformerEmbeddings:
    """A text's vector: the mean of a language model's last hidden states over its tokens, L2-normalised.

    Each distinct text is embedded once: vectors are kept (the ``cache_size`` most recently used), so an env
    whose observations recur (a game's rooms, its task) pays the model's cost once per text. Texts not seen yet
    are embedded together, in padded batches of at most ``max_batch_tokens`` tokens.

    Example:
        >>> embeddings = TransformerEmbeddings.from_pretrained(
        ...     "../shared/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")  # doctest: +SKIP
        >>> embeddings.transform(["You arrive at desk 1.", "look"]).shape  # doctest: +SKIP
        (2, 576)
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_length: int = 256,
        max_batch_tokens: int = 8192,
        cache_size: int = 65536,
    ) -> None:
        """Embed with ``model`` (any transformers model that returns hidden states) and its ``tokenizer``.

        Texts are cut at ``max_length`` tokens.

        Raises:
            ValueError: when ``max_length``, ``max_batch_tokens`` or ``cache_size`` is below 1.
        """
        for name, value in (("max_length", max_length), ("max_batch_tokens", max_batch_tokens),
                            ("cache_size", cache_size)):
            if value < 1:
                raise ValueError(f"`{name}` should be at least 1. Received {value}.")
        ensure_pad_token(tokenizer)
        self.model = model.eval()
        self.tokenizer = tokenizer
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        #: Floats per text: the model's hidden size.
        self.dim = int(config.hidden_size)
        self.max_length = max_length
        self.max_batch_tokens = max_batch_tokens
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        gguf_file: str | None = None,
        **kwargs: Any,
    ) -> TransformerEmbeddings:
        """Load a local model directory or ``.gguf`` file (see :func:`prm_gym.checkpoints.resolve_source`).

        ``kwargs`` go to :meth:`__init__` (``max_length``, ``max_batch_tokens``, ``cache_size``).
        """
        from transformers import AutoModel, AutoTokenizer

        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        source = resolve_source(name_or_path, dtype=torch_dtype, gguf_file=gguf_file)
        tokenizer = load_pretrained(AutoTokenizer, source)
        model = load_pretrained(AutoModel, source, dtype=torch_dtype, use_safetensors=True)
        return cls(model.to(torch_device), tokenizer, **kwargs)

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """Return the texts' unit-norm embeddings, shape ``(len(texts), dim)``, float32."""
        missing = list(dict.fromkeys(text for text in texts if text not in self._cache))
        if missing:
            for text, vector in zip(missing, self._embed(missing), strict=True):
                self._cache[text] = vector
        rows = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            self._cache.move_to_end(text)
            rows[i] = self._cache[text]
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return rows

    @torch.inference_mode()
    def _embed(self, texts: list[str]) -> list[np.ndarray]:
        """Embed ``texts`` with the model (padded batches, mean over real tokens)."""
        encoded = [self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"] for text in texts]
        device = next(self.model.parameters()).device
        vectors: list[np.ndarray] = [np.empty(0)] * len(texts)
        for batch in token_batches([len(ids) for ids in encoded], self.max_batch_tokens):
            # Padded on the right, so that a causal model's real tokens read exactly what they read unpadded.
            inputs = self.tokenizer.pad(
                {"input_ids": [encoded[i] for i in batch]}, padding_side="right", return_tensors="pt"
            ).to(device)
            hidden = self.model(**inputs, output_hidden_states=True).hidden_states[-1].float()
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            unit = torch.nn.functional.normalize(mean, dim=-1).cpu().numpy()
            for row, i in enumerate(batch):
                vectors[i] = unit[row].astype(np.float32)
        return vectors
