"""The process reward model: a language model with a one-logit head that scores proposed actions.

:class:`ProcessRewardModel` implements :class:`~prm_gym.prm.base.RewardModel`: a context (state + proposed
action) is rendered by :func:`~prm_gym.prm.prompt.render_text`, and Q(s, a) = sigmoid(logit) of a one-logit
sequence-classification head (decoders read it at the last real token, encoders at the first). Training uses the
same :meth:`ProcessRewardModel.encode` and :meth:`ProcessRewardModel.logits`, so train and test inputs match.
Scoring reads a token prefix that several contexts share (the N candidate actions of one state) only once
(:mod:`prm_gym.prm.shared_prefix`), and keeps the keys and values of recent prefixes from call to call
(:mod:`prm_gym.prm.prefix_cache`), so the next turn of an episode runs only its new tokens;
``shared_prefix=False`` turns both off, ``prefix_cache_tokens=0`` the second.
Models load from a Hugging Face directory, a hub id, or a GGUF file (converted once to safetensors in a cache
folder); weights are read and written as safetensors only, nothing is unpickled.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BatchEncoding
except ImportError as err:  # pragma: no cover - depends on the installed extras
    raise ImportError("ProcessRewardModel needs the `llm` extra: pip install 'prm-gym[llm]'") from err

from prm_gym.checkpoints import (
    ensure_pad_token,
    load_pretrained,
    max_positions,
    resolve_source,
    save_adapters,
    token_batches,
)
from prm_gym.devices import resolve_device, resolve_dtype
from prm_gym.io import atomic_directory
from prm_gym.prm import shared_prefix as sharing
from prm_gym.prm.context import Context
from prm_gym.prm.prefix_cache import PrefixCache
from prm_gym.prm.prompt import PromptConfig, encode_contexts

if TYPE_CHECKING:
    from peft import LoraConfig

__all__ = [
    "PREFIX_CACHE_TOKENS",
    "SETTINGS_FILE",
    "LoraSettings",
    "ProcessRewardModel",
    "head_logits",
    "position_logits",
]

logger = logging.getLogger(__name__)


#: The file beside the weights that holds the prompt config and the model settings.
SETTINGS_FILE = "prm_gym_config.json"

#: Default cap of the cross-call prefix cache, in tokens: 377 MB for SmolLM2-135M in bf16 (23 KB per token),
#: eight renders of the default 2,048-token budget (the sub-envs of a vector env, the games of a lockstep group).
PREFIX_CACHE_TOKENS = 16384


@dataclass
class LoraSettings:
    """Low-rank adapters (LoRA, via peft) on the backbone; the score head stays fully trainable."""

    #: Rank of the adapters.
    r: int = 16
    #: Scaling numerator (the update is scaled by alpha / r).
    alpha: int = 32
    #: Dropout on the adapters' input.
    dropout: float = 0.05
    #: Module names to adapt: every linear layer of the backbone by default (adapting the attention's
    #: projections alone learns a new task much less well); ``None`` uses peft's default for the architecture.
    target_modules: list[str] | str | None = "all-linear"

    def to_peft(self, task_type: str = "SEQ_CLS") -> LoraConfig:
        """Return the equivalent peft ``LoraConfig``: for sequence classification (PRMs) or ``"CAUSAL_LM"``."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            task_type=task_type,
        )


class ProcessRewardModel:
    """Scores (state, action) contexts with a language model and a one-logit head: Q(s, a) = sigmoid(logit).

    Contexts are scored in batches of at most ``max_batch_tokens`` padded tokens, longest first, under
    ``torch.inference_mode()``; results come back in input order. Contexts whose tokens share a long prefix
    (the candidate actions of one state) are scored on it: the prefix runs once, then each context's tail
    against its cached keys and values, which gives the full forwards' scores at a fraction of the cost.
    Across calls, the keys and values of the prefixes scored (a lone context's: all its tokens but the last)
    stay in :attr:`prefix_cache`, least recently used evicted past ``prefix_cache_tokens`` tokens: the next turn
    of an episode, whose render starts with this turn's, runs only its new tokens. Callers change nothing:
    Best-of-N and the process-reward wrappers benefit as they are (the entries of ended episodes are the least
    recently used, and go first). ``shared_prefix=False`` turns both off, ``prefix_cache_tokens=0`` the cache;
    models that cannot share (encoders, see :func:`~prm_gym.prm.shared_prefix.unsupported`) get full forwards.
    Load with :meth:`from_pretrained` (a model directory, a hub id or a GGUF file), or wrap a
    sequence-classification model with ``num_labels=1``.

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification, BertTokenizer
        >>> words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *"you are in a room go to sink 1 look".split()]
        >>> tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(words)})
        >>> config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        ...                     intermediate_size=32, num_labels=1)
        >>> prm = ProcessRewardModel(BertForSequenceClassification(config), tokenizer)
        >>> state = Context(task="look", observation="You are in a room.", admissible_commands=("look",))
        >>> scores = prm.score([state.propose("look"), state.propose("go to sink 1")])
        >>> len(scores), all(0.0 <= s <= 1.0 for s in scores)
        (2, True)
        >>> prm = ProcessRewardModel.from_pretrained("SmolLM2-135M-Instruct.Q4_1.gguf")  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        prompt_config: PromptConfig | None = None,
        max_batch_tokens: int = 8192,
        lora: LoraSettings | LoraConfig | None = None,
        shared_prefix: bool = True,
        prefix_cache_tokens: int = PREFIX_CACHE_TOKENS,
    ) -> None:
        """Wrap ``model`` (a one-logit sequence classifier) and its ``tokenizer``; add LoRA when ``lora`` is set.

        The tokenizer's pad token becomes its eos token when it has none, and the model's ``pad_token_id``
        follows the tokenizer's, so that decoders find the last real token of each padded row.

        Raises:
            ValueError: when the model's head does not have exactly one label, the tokenizer has neither a pad
                nor an eos token, ``max_batch_tokens`` is not positive or ``prefix_cache_tokens`` negative.
        """
        if getattr(model.config, "num_labels", None) != 1:
            raise ValueError(
                f"A process reward model needs a one-logit head (num_labels=1); this model has "
                f"num_labels={getattr(model.config, 'num_labels', None)}. Load it with "
                "`AutoModelForSequenceClassification.from_pretrained(..., num_labels=1)` or use "
                "`ProcessRewardModel.from_pretrained`."
            )
        if max_batch_tokens < 1:
            raise ValueError(f"`max_batch_tokens` should be a positive integer. Received {max_batch_tokens}.")
        ensure_pad_token(tokenizer)
        model.config.get_text_config().pad_token_id = tokenizer.pad_token_id
        #: The sequence classifier (a peft model when LoRA is on).
        self.model = model if lora is None else _with_lora(model, lora)
        #: The tokenizer that renders and encodes contexts.
        self.tokenizer = tokenizer
        #: How contexts are rendered; saved with the model.
        self.prompt_config = prompt_config or PromptConfig()
        #: Most padded tokens in one scoring batch (one row longer than this still goes alone); on a shared
        #: prefix, the prefix runs alone and the tails are packed into rows of at most this many tokens.
        self.max_batch_tokens = max_batch_tokens
        #: Score contexts that share a token prefix on one forward of it (see :mod:`prm_gym.prm.shared_prefix`);
        #: the scores are the full forwards' up to rounding. Models that cannot share get full forwards.
        self.shared_prefix = shared_prefix
        #: Keys and values of recently scored prefixes, reused by later calls (with ``shared_prefix`` on); its
        #: ``max_tokens`` (``prefix_cache_tokens``) caps what it holds, 0 turns it off. It empties itself when
        #: the weights or adapters change (see :meth:`~prm_gym.prm.prefix_cache.PrefixCache.check_weights`).
        self.prefix_cache = PrefixCache(prefix_cache_tokens)
        self._unshareable: str | None = None  # why this model cannot share prefixes, once found

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        gguf_file: str | None = None,
        prompt_config: PromptConfig | None = None,
        max_batch_tokens: int | None = None,
        lora: LoraSettings | LoraConfig | None = None,
        shared_prefix: bool = True,
        prefix_cache_tokens: int = PREFIX_CACHE_TOKENS,
        trust_remote_code: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> ProcessRewardModel:
        """Load a reward model from a directory, a hub id or a GGUF file; add a fresh score head when it has none.

        Args:
            name_or_path: A directory written by :meth:`save_pretrained`, a Hugging Face causal-LM or classifier
                directory, a ``.gguf`` file, or a hub id (needs the hub or its local cache).
            device: Where to run (see :func:`prm_gym.devices.resolve_device`).
            dtype: Weight precision (see :func:`prm_gym.devices.resolve_dtype`).
            gguf_file: The GGUF file's name inside the directory ``name_or_path``.
            prompt_config: How to render contexts; default: the saved one, else :class:`PromptConfig`'s defaults.
            max_batch_tokens: Scoring batch budget; default: the saved one, else 8192.
            lora: Wrap the backbone with LoRA adapters (for training).
            shared_prefix: Score contexts that share a token prefix on one forward of it (see the class).
            prefix_cache_tokens: Cap of the prefix cache kept across calls, in tokens (0: none; see the class).
            trust_remote_code: Let transformers run model code shipped with the checkpoint.
            cache_dir: Folder of converted GGUF models; default :func:`prm_gym.checkpoints.default_cache_dir`.

        Returns:
            The model, on ``device``, in eval mode.

        Raises:
            FileNotFoundError: when a local path does not exist.
            ValueError: when a directory has no safetensors weights, or its settings file is unreadable.
            OSError: when a hub id cannot be fetched (offline, or no such model).
        """
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        source = resolve_source(name_or_path, dtype=torch_dtype, gguf_file=gguf_file, cache_dir=cache_dir)
        saved_prompt, saved_max_batch_tokens = _read_settings(Path(source) / SETTINGS_FILE)
        tokenizer = load_pretrained(AutoTokenizer, source, trust_remote_code=trust_remote_code)
        model = load_pretrained(
            AutoModelForSequenceClassification,
            source,
            num_labels=1,
            ignore_mismatched_sizes=True,
            dtype=torch_dtype,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
        )
        return cls(
            model.to(torch_device),
            tokenizer,
            prompt_config=prompt_config or saved_prompt,
            max_batch_tokens=max_batch_tokens if max_batch_tokens is not None else saved_max_batch_tokens or 8192,
            lora=lora,
            shared_prefix=shared_prefix,
            prefix_cache_tokens=prefix_cache_tokens,
        )

    @property
    def device(self) -> torch.device:
        """The device the model's weights are on."""
        return next(self.model.parameters()).device

    def save_pretrained(self, path: str | os.PathLike[str], lora_base: str | os.PathLike[str] | None = None) -> Path:
        """Write safetensors weights, the tokenizer and :data:`SETTINGS_FILE` to ``path`` at once; return it.

        LoRA adapters are merged into a copy of the weights, so the directory loads without peft; or, given
        ``lora_base`` (the model the adapters were added to, as passed to :meth:`from_pretrained`), only the
        adapters and the score head are saved: megabytes, which :meth:`from_pretrained` loads onto that base
        (:func:`prm_gym.checkpoints.save_adapters`). The directory is written beside ``path`` and renamed into
        place: a reader sees the old model or the new one.

        Raises:
            ValueError: when ``path`` is an existing file, or ``lora_base`` is given for a model without adapters.
        """
        path = Path(path)
        if path.is_file():
            raise ValueError(f"Cannot save a model to {str(path)!r}: it is a file, not a directory.")
        model = self.model
        settings: dict[str, Any] = {
            "prompt_config": dataclasses.asdict(self.prompt_config),
            "max_batch_tokens": self.max_batch_tokens,
            "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
        }
        if lora_base is not None and not _is_peft(model):
            raise ValueError("`lora_base` saves LoRA adapters, but this reward model has none.")
        if _is_peft(model) and lora_base is None:
            lora = model.peft_config[model.active_adapter]
            settings["merged_lora"] = {
                "r": lora.r,
                "alpha": lora.lora_alpha,
                "target_modules": sorted(lora.target_modules or ()),
            }
            model = copy.deepcopy(model).merge_and_unload()
        with atomic_directory(path) as tmp:
            if lora_base is None:
                model.save_pretrained(tmp)
            else:
                save_adapters(model, tmp, lora_base)
            self.tokenizer.save_pretrained(tmp)
            (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        return path

    def encode(self, contexts: Sequence[Context]) -> BatchEncoding:
        """Return the rendered contexts as one right-padded batch (``input_ids``, ``attention_mask``) on the CPU.

        Raises:
            TypeError: when an item is not a :class:`Context`.
            ValueError: when a context proposes no action, or renders longer than the model's positions.
        """
        return self._pad(self._tokenize(contexts))

    def logits(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Return the head's raw logit per row (float32, shape ``(rows,)``), with gradients unless disabled."""
        return head_logits(self.model, batch)

    def score(self, contexts: Sequence[Context]) -> list[float]:
        """Return Q(s, a) = sigmoid(logit) in [0, 1] per context, in input order (eval mode, no gradients).

        Raises:
            TypeError: when an item is not a :class:`Context`.
            ValueError: when a context proposes no action, or renders longer than the model's positions.
        """
        token_ids = self._tokenize(contexts)
        logits = [0.0] * len(token_ids)
        groups, alone = self._shared_groups(token_ids)
        cache = self.prefix_cache if groups and self.prefix_cache.max_tokens else None
        if cache is not None:
            cache.check_weights(self.model)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for group in groups:
                    shared = sharing.group_logits(self.model, token_ids, group, self.max_batch_tokens, cache)
                    for row, logit in zip(group.rows, shared, strict=True):
                        logits[row] = logit
                for rows in token_batches([len(token_ids[i]) for i in alone], self.max_batch_tokens):
                    batch = [alone[i] for i in rows]
                    batch_logits = self.logits(self._pad([token_ids[i] for i in batch]))
                    for row, logit in zip(batch, batch_logits.tolist(), strict=True):
                        logits[row] = logit
        finally:
            self.model.train(was_training)
        return torch.sigmoid(torch.tensor(logits, dtype=torch.float32)).tolist()

    def _shared_groups(self, token_ids: list[list[int]]) -> tuple[list[sharing.PrefixGroup], list[int]]:
        """Return the groups of rows to score on a shared prefix (or a cached one) and the rows for full forwards."""
        everything: tuple[list[sharing.PrefixGroup], list[int]] = ([], list(range(len(token_ids))))
        cached = self.prefix_cache.max_tokens > 0
        if not self.shared_prefix or (len(token_ids) < 2 and not cached):
            return everything
        if self._unshareable is None:
            self._unshareable = sharing.unsupported(self.model) or ""
            if self._unshareable:
                logger.warning("Scoring with full forwards, no shared prefixes: %s.", self._unshareable)
        if self._unshareable:
            return everything
        pad = self.model.config.get_text_config().pad_token_id
        return sharing.plan_groups(token_ids, pad, singletons=cached)

    def token_ids(self, contexts: Sequence[Context]) -> list[list[int]]:
        """Return each context's model input ids, unpadded: what :meth:`encode` pads into a batch.

        Raises:
            TypeError: when an item is not a :class:`Context`.
            ValueError: when a context proposes no action, or renders longer than the model's positions.
        """
        return self._tokenize(contexts)

    def _tokenize(self, contexts: Sequence[Context]) -> list[list[int]]:
        for i, context in enumerate(contexts):
            if not isinstance(context, Context):
                raise TypeError(f"contexts[{i}] should be a prm_gym Context. Received {type(context).__name__}.")
            if context.action is None:
                raise ValueError(f"contexts[{i}] proposes no action: a reward model scores `context.propose(action)`.")
        return encode_contexts(contexts, self.tokenizer, self.prompt_config, positions=max_positions(self.model))

    def _pad(self, token_ids: list[list[int]]) -> BatchEncoding:
        # Right padding whatever the tokenizer's side: positions then start at 0 in every row, as when unbatched.
        return self.tokenizer.pad({"input_ids": token_ids}, padding_side="right", return_tensors="pt")


def position_logits(
    model: torch.nn.Module, batch: Mapping[str, torch.Tensor], rows: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """Return the one-logit head read at each (row, position) of an encoded batch, as float32 (with gradients).

    One forward of a whole episode's render reads the head at the end of every action in it: by causal
    attention, the head at a position sees exactly the tokens up to it, as :func:`head_logits` on that prefix
    alone would (whole-episode PRM training). A batch with ``position_ids`` and a 4D ``attention_mask`` runs
    token tries (:class:`~prm_gym.prm.token_trie.TokenTrie`: packed InversePRM transitions) the same way.
    ``model`` is a decoder classifier :func:`shared_prefix.unsupported <prm_gym.prm.shared_prefix.unsupported>`
    accepts, or a peft model around one.
    """
    classifier = sharing.decoder_classifier(model)
    backbone = getattr(classifier, classifier.base_model_prefix)
    device = next(model.parameters()).device
    position_ids = batch.get("position_ids")
    hidden = backbone(
        input_ids=batch["input_ids"].to(device),
        attention_mask=batch["attention_mask"].to(device),
        position_ids=None if position_ids is None else position_ids.to(device),
    ).last_hidden_state
    return classifier.score(hidden[rows.to(device), positions.to(device)]).squeeze(-1).float()


def head_logits(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Return a one-logit classifier's logit per row of an encoded batch, as float32 on the model's device.

    The one forward path of scoring and training (the trainer passes its possibly wrapped model).
    """
    device = next(model.parameters()).device
    output = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
    return output.logits.squeeze(-1).float()


def _read_settings(path: Path) -> tuple[PromptConfig | None, int | None]:
    """Return the prompt config and batch budget saved at ``path`` (``None`` for what is not there)."""
    if not path.is_file():
        return None, None
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
        prompt = settings.get("prompt_config")
        return (PromptConfig(**prompt) if prompt is not None else None), settings.get("max_batch_tokens")
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, AttributeError) as err:
        raise ValueError(f"Unreadable model settings {str(path)!r}: {err}. Save the model again.") from err


def _with_lora(model: Any, lora: LoraSettings | LoraConfig) -> Any:
    """Return ``model`` wrapped by peft with LoRA adapters; the score head goes to ``modules_to_save``."""
    from peft import LoraConfig, TaskType, get_peft_model

    config = lora.to_peft() if isinstance(lora, LoraSettings) else lora
    if not isinstance(config, LoraConfig):
        raise TypeError(f"`lora` should be LoraSettings or a peft LoraConfig. Received {type(lora).__name__}.")
    if config.task_type is None:
        config = dataclasses.replace(config, task_type=TaskType.SEQ_CLS)
    elif config.task_type != TaskType.SEQ_CLS:
        raise ValueError(f"A reward model's LoraConfig needs task_type='SEQ_CLS'. Received {config.task_type!r}.")
    return get_peft_model(model, config)


def _is_peft(model: Any) -> bool:
    peft = sys.modules.get("peft")  # a peft model exists only once peft is imported
    return peft is not None and isinstance(model, peft.PeftModel)
