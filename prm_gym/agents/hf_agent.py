"""A local Hugging Face causal language model as a text-game policy.

:class:`HFAgent` reads each context through :func:`~prm_gym.prm.prompt.render_text` (the renderer reward models
are trained with) and acts in one of two modes:

- ``"generate"``: the model writes ``REASON: ... ACTION: ...`` (ReAct style); the action is mapped onto an
  admissible command by :func:`~prm_gym.agents.parsing.parse_response` and ``match_counts`` says how often each
  path (exact, normalised, nearest) fired. Generation is batched over contexts (padded-token budget) and stops
  for each row once its ACTION line is complete.
- ``"loglik"``: constrained decoding. The model scores every admissible command's answer
  (``ACTION: <command>`` and the end of the turn) given the prompt, and the most likely command is taken.

Each prompt is read once (:mod:`prm_gym.agents.prompt_reuse`, ``HFAgentConfig.prompt_reuse``): in loglik mode
its commands' answers run as suffixes packed after it, and the contexts of one call (a lockstep group of games)
are one batch; in both modes the keys and values of the episode's previous prompt and answer, which begin this
turn's prompt (the renderer is append-only), come from :attr:`HFAgent.prefix_cache`, so a turn runs only its new
tokens (~50-80 instead of ~500-2,000). The log-likelihoods are the full forwards' up to rounding.

Models load from a hub id, a local directory or a GGUF file through :mod:`prm_gym.checkpoints`, the same path
as :class:`~prm_gym.prm.model.ProcessRewardModel`; ``trust_remote_code`` stays off unless asked for.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

try:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, StoppingCriteria
except ImportError as err:  # pragma: no cover - depends on the installed extras
    raise ImportError("HFAgent needs the `llm` extra: pip install 'prm-gym[llm]'") from err

from prm_gym.agents import prompt_reuse as reuse
from prm_gym.agents.base import Agent, Decision
from prm_gym.agents.hf_config import HFAgentConfig
from prm_gym.agents.parsing import parse_response
from prm_gym.checkpoints import ensure_pad_token, load_pretrained, max_positions, resolve_source, token_batches
from prm_gym.devices import resolve_device, resolve_dtype
from prm_gym.prm.context import Context
from prm_gym.prm.prefix_cache import PrefixCache
from prm_gym.prm.prompt import encode_answers, encode_contexts

__all__ = ["HFAgent"]

logger = logging.getLogger(__name__)

_ACTION_LINE = re.compile(r"action\s*[:：][^\n]*\S[^\n]*\n", re.IGNORECASE)


class HFAgent(Agent):
    """A policy run by a local causal LM: generated ReAct answers, or the most likely admissible command.

    Example:
        >>> from transformers import BertTokenizer, LlamaConfig, LlamaForCausalLM
        >>> words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *"action : look inventory you are in a room".split()]
        >>> tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(words)}, eos_token="[SEP]")
        >>> config = LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        ...                      num_attention_heads=2)
        >>> agent = HFAgent(LlamaForCausalLM(config), tokenizer, HFAgentConfig(mode="loglik"))
        >>> agent.act("You are in a room.", {"task": "look", "admissible_commands": ["look", "inventory"]}) in (
        ...     "look", "inventory")
        True
        >>> smollm = HFAgent.from_pretrained("SmolLM2-135M-Instruct.Q4_1.gguf")  # doctest: +SKIP
    """

    def __init__(self, model: Any, tokenizer: Any, config: HFAgentConfig | None = None, *, name: str = "hf") -> None:
        """Wrap a causal LM and its tokenizer (the pad token becomes the eos token when there is none).

        Raises:
            ValueError: when the tokenizer has neither a pad nor an eos token.
        """
        super().__init__()
        ensure_pad_token(tokenizer)
        #: The causal language model, in eval mode.
        self.model = model.eval()
        #: Its tokenizer.
        self.tokenizer = tokenizer
        #: Mode, sampling, batching and prompt settings.
        self.config = config or HFAgentConfig()
        self.name = f"{name}-{self.config.mode}"
        #: Generate mode: how often each parse path mapped an answer to a command (exact, normalised, nearest).
        self.match_counts: Counter[str] = Counter()
        self._generator = torch.Generator().manual_seed(0)
        #: Keys and values of the prompts read (and answers taken), matched by token prefix at the next turn;
        #: bounded by ``config.prefix_cache_tokens`` (set at construction; 0 when ``prompt_reuse`` is off), least
        #: recently used evicted. Kept across :meth:`reset`: rollouts from one history reuse it.
        self.prefix_cache = PrefixCache(self.config.prefix_cache_tokens if self.config.prompt_reuse else 0)
        self._unreusable: str | None = None  # why this model cannot reuse prompts, once found

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        config: HFAgentConfig | None = None,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        gguf_file: str | None = None,
        trust_remote_code: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> HFAgent:
        """Load the policy from a hub id, a model directory or a GGUF file (see :mod:`prm_gym.checkpoints`).

        Args:
            name_or_path: A causal-LM directory (safetensors), a ``.gguf`` file, or a hub id.
            config: Mode and sampling settings; default :class:`HFAgentConfig`'s.
            device: Where to run (see :func:`prm_gym.devices.resolve_device`).
            dtype: Weight precision (see :func:`prm_gym.devices.resolve_dtype`; bf16 on CPUs and recent GPUs).
            gguf_file: The GGUF file's name inside the directory ``name_or_path``.
            trust_remote_code: Let transformers run model code shipped with the checkpoint.
            cache_dir: Folder of converted GGUF models.

        Raises:
            FileNotFoundError, ValueError, OSError: as :func:`prm_gym.checkpoints.resolve_source` and
                :func:`~prm_gym.checkpoints.load_pretrained` raise them.
        """
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        source = resolve_source(name_or_path, dtype=torch_dtype, gguf_file=gguf_file, cache_dir=cache_dir)
        tokenizer = load_pretrained(AutoTokenizer, source, trust_remote_code=trust_remote_code)
        model = load_pretrained(
            AutoModelForCausalLM, source, dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code
        )
        name = os.path.basename(os.path.normpath(str(name_or_path))).removesuffix(".gguf") or "hf"
        return cls(model.to(torch_device), tokenizer, config, name=name)

    @property
    def device(self) -> torch.device:
        """The device the model's weights are on."""
        return next(self.model.parameters()).device

    def reset(self, seed: int | None = None) -> None:
        """Forget the episode; ``seed`` reseeds the agent's sampling."""
        super().reset(seed)
        if seed is not None:
            self._generator.manual_seed(seed)

    def decide(self, contexts: Sequence[Context]) -> list[Decision]:
        """Return one decision per context, at ``config.temperature`` (greedy at 0), in one batched pass."""
        return [samples[0] for samples in self._choose(contexts, 1, self.config.temperature)]

    def sample(self, contexts: Sequence[Context], n: int) -> list[list[Decision]]:
        """Return ``n`` decisions per context at ``config.sample_temperature`` (duplicates possible).

        Generate mode draws ``n`` answers per prompt in one ``generate`` call; loglik mode draws commands from
        the softmax of their log-likelihoods divided by the temperature.
        """
        return self._choose(contexts, n, self.config.sample_temperature)

    def _choose(self, contexts: Sequence[Context], n: int, temperature: float) -> list[list[Decision]]:
        if n < 1:
            raise ValueError(f"`n` should be at least 1. Received {n}.")
        for i, context in enumerate(contexts):
            if not isinstance(context, Context):
                raise TypeError(f"contexts[{i}] should be a prm_gym Context. Received {type(context).__name__}.")
            if not context.admissible_commands:
                raise ValueError(f"HFAgent chooses among `admissible_commands`; contexts[{i}] has none.")
        if not contexts:
            return []
        states = [dataclasses.replace(context, action=None, reason=None) for context in contexts]
        with torch.inference_mode():
            if self.config.mode == "loglik":
                return self._ranked(states, n, temperature)
            return self._generated(states, n, temperature)

    # Generate mode.

    def _generated(self, states: list[Context], n: int, temperature: float) -> list[list[Decision]]:
        reserve = self.config.max_new_tokens
        prompts = [self._prompt_ids(state, reserve, reserved_by="`max_new_tokens`") for state in states]
        answers: list[list[Decision]] = [[] for _ in states]
        lengths = [len(ids) + self.config.max_new_tokens for ids in prompts]
        for rows in token_batches(lengths, max(1, self.config.max_batch_tokens // n)):
            texts, logprobs = self._generate([prompts[row] for row in rows], n, temperature)
            for k, row in enumerate(rows):
                for j in range(k * n, (k + 1) * n):
                    answers[row].append(self._decision(texts[j], logprobs[j], states[row]))
        return answers

    def _generate(self, prompts: list[list[int]], n: int, temperature: float) -> tuple[list[str], list[float]]:
        """Return ``n`` answers per prompt (prompt-major) and each answer's log-probability under the model.

        With prompt reuse, each prompt's keys and values (all but its last token's) come from
        :meth:`_prompt_layers` and reach ``generate`` as a left-padded cache, so it runs only the last token.
        """
        rows = [prompt for prompt in prompts for _ in range(n)]
        batch = self.tokenizer.pad({"input_ids": rows}, padding_side="left", return_tensors="pt").to(self.device)
        inputs = dict(batch)
        if self._reusing():
            layers = [layer for layer in self._prompt_layers(prompts) for _ in range(n)]
            width = batch["input_ids"].shape[1] - 1
            inputs["cache"] = reuse.padded_cache(self.model, layers, [len(row) - 1 for row in rows], width)
        sampling = temperature > 0
        eos_ids = self._eos_ids()
        generation = GenerationConfig(
            max_new_tokens=self.config.max_new_tokens,
            do_sample=sampling,
            temperature=temperature if sampling else None,
            top_p=self.config.top_p if sampling else None,
            top_k=None,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=eos_ids or None,
            return_dict_in_generate=True,
            output_logits=True,
        )
        prompt_length = batch["input_ids"].shape[1]
        stop = _ActionLineComplete(self.tokenizer, prompt_length)
        if sampling:  # generate draws from torch's global generator: seed it from the agent's own
            torch.manual_seed(int(torch.randint(2**62, (), generator=self._generator)))
        output = self.model.generate(**inputs, generation_config=generation, stopping_criteria=[stop])
        new_tokens = output.sequences[:, prompt_length:]
        logits = torch.stack(output.logits, dim=1).float()
        token_logprobs = logits.log_softmax(-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        ends = torch.tensor([stop.answer_length(i, row, eos_ids) for i, row in enumerate(new_tokens.tolist())])
        kept = torch.arange(new_tokens.shape[1]).unsqueeze(0) < ends.unsqueeze(1)
        logprobs = (token_logprobs.cpu() * kept).sum(1).tolist()
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return texts, logprobs

    def _decision(self, text: str, logprob: float, context: Context) -> Decision:
        parsed = parse_response(text, context.admissible_commands)
        self.match_counts[parsed.match] += 1
        if parsed.match != "exact":
            logger.debug("Mapped %r to %r (%s).", parsed.raw_action, parsed.action, parsed.match)
        return Decision(parsed.action, parsed.reason, logprob)

    def _eos_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        ids = list(eos) if isinstance(eos, list) else [eos] if eos is not None else []
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    # Loglik mode.

    def _ranked(self, states: list[Context], n: int, temperature: float) -> list[list[Decision]]:
        """Return ``n`` commands per state: the most likely when greedy, else drawn from their softmax."""
        answers = [self._answer_ids(state.admissible_commands) for state in states]
        prompts = [self._prompt_ids(s, reserve=max(map(len, ids))) for s, ids in zip(states, answers, strict=True)]
        totals, scored = self._command_logliks(prompts, answers)
        decisions = []
        for b, state in enumerate(states):
            logliks = torch.tensor(totals[b])
            if temperature == 0:
                picks = [int(logliks.argmax())] * n
            else:
                weights = torch.softmax(logliks / temperature, dim=0)
                picks = torch.multinomial(weights, n, replacement=True, generator=self._generator).tolist()
            decisions.append([Decision(state.admissible_commands[i], None, float(logliks[i])) for i in picks])
            if scored is not None:  # the next turn's prompt starts with this one and, when decided, its answer
                chosen = picks[0] if n == 1 else None
                answer = answers[b][chosen] if chosen is not None else []
                self.prefix_cache.store(prompts[b] + answer, scored[b].prefix(chosen))
        return decisions

    def _command_logliks(
        self, prompts: list[list[int]], answers: list[list[list[int]]]
    ) -> tuple[list[list[float]], list[reuse.ScoredPrompt] | None]:
        """Return log p(answer | prompt) per answer of each prompt (mean per token with ``length_normalise``).

        With prompt reuse each prompt runs once, from its cached prefix on, its answers packed after it, all
        prompts in one batch (also returned: what the forwards left, to cache); else full forwards.
        """
        scored = None
        if self._reusing():
            rows = [self._cached_row(prompt) for prompt in prompts]
            scored = reuse.score_answers(self.model, rows, answers, self.config.max_batch_tokens)
            totals = [result.logprobs for result in scored]
        else:
            totals = reuse.full_answer_logprobs(self.model, prompts, answers, self.config.max_batch_tokens)
        if self.config.length_normalise:
            totals = [
                [total / len(ids) for total, ids in zip(row, row_answers, strict=True)]
                for row, row_answers in zip(totals, answers, strict=True)
            ]
        return totals, scored

    # Prompt reuse.

    def _reusing(self) -> bool:
        """Say whether prompts are read once (config and model allow it); the first refusal is logged once."""
        if not self.config.prompt_reuse:
            return False
        if self._unreusable is None:
            self._unreusable = reuse.unsupported(self.model) or ""
            if self._unreusable:
                logger.warning("HFAgent reads every prompt in full, no reuse: %s.", self._unreusable)
        if self._unreusable:
            return False
        self.prefix_cache.check_weights(self.model)
        return True

    def _cached_row(self, prompt: list[int]) -> reuse.PromptRow:
        """Return ``prompt`` with the keys and values of its longest cached prefix (its last token left to run)."""
        hit = self.prefix_cache.match(prompt, limit=len(prompt) - 1)
        return reuse.PromptRow(prompt, hit.length, list(hit.layers) if hit.length else None)

    def _prompt_layers(self, prompts: list[list[int]]) -> list[reuse.Layers]:
        """Return each prompt's keys and values, running only what the prefix cache lacks; cache them."""
        rows = [self._cached_row(prompt) for prompt in prompts]
        scored = reuse.score_answers(self.model, rows, [[] for _ in prompts], self.config.max_batch_tokens)
        layers = [result.prefix() for result in scored]
        for prompt, prompt_layers in zip(prompts, layers, strict=True):
            self.prefix_cache.store(prompt, prompt_layers)
        return layers

    def _answer_ids(self, commands: Sequence[str]) -> list[list[int]]:
        """Return the tokens of the assistant's answer ``ACTION: <command>`` for each command, as rendered.

        Raises:
            ValueError: when the chat template cannot tell answers from prompts (use mode='generate').
        """
        try:
            return encode_answers(commands, self.tokenizer, self.config.prompt)
        except ValueError as error:
            raise ValueError(f"{error} Loglik mode cannot score commands with it; use mode='generate'.") from None

    # Shared.

    def _prompt_ids(self, state: Context, reserve: int = 0, reserved_by: str | None = None) -> list[int]:
        """Return the tokens of ``state`` rendered as a prompt for the assistant's turn.

        Raises:
            ValueError: when the prompt and ``reserve`` answer tokens (set by ``reserved_by``) do not fit in the
                model's positions.
        """
        positions, prompt = max_positions(self.model), self.config.prompt
        (ids,) = encode_contexts(
            [state], self.tokenizer, prompt, positions=positions, reserve=reserve, reserved_by=reserved_by
        )
        return ids


class _ActionLineComplete(StoppingCriteria):
    """Stops each row once the text it generated holds a complete ``ACTION: ...`` line.

    ``lengths[row]`` records how many tokens the row had generated when it stopped (eos aside).
    """

    def __init__(self, tokenizer: Any, prompt_length: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self.lengths: dict[int, int] = {}

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        new_tokens = input_ids[:, self.prompt_length :]
        done = []
        for row, text in enumerate(self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
            if row not in self.lengths and _ACTION_LINE.search(text):
                self.lengths[row] = new_tokens.shape[1]
            done.append(row in self.lengths)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def answer_length(self, row: int, tokens: list[int], eos_ids: list[int]) -> int:
        """Return how many of ``row``'s generated ``tokens`` are its answer: up to its stop or first eos (kept)."""
        end = self.lengths.get(row, len(tokens))
        return next((i + 1 for i, token in enumerate(tokens[:end]) if token in eos_ids), end)
