"""A local Hugging Face causal language model as a text-game policy.

:class:`HFAgent` reads each context through :func:`~prm_gym.prm.prompt.render_text` (the renderer reward models
are trained with) and acts in one of two modes:

- ``"generate"``: the model writes ``REASON: ... ACTION: ...`` (ReAct style); the action is mapped onto an
  admissible command by :func:`~prm_gym.agents.parsing.parse_response` and ``match_counts`` says how often each
  path (exact, normalised, nearest) fired. Generation is batched over contexts (padded-token budget) and stops
  for each row once its ACTION line is complete.
- ``"loglik"``: constrained decoding. The model scores every admissible command's answer
  (``ACTION: <command>`` and the end of the turn) given the prompt, and the most likely command is taken. The
  prompt is run once per context and its key/value cache is shared by all its commands.

Models load from a hub id, a local directory or a GGUF file through :mod:`prm_gym.checkpoints`, the same path
as :class:`~prm_gym.prm.model.ProcessRewardModel`; ``trust_remote_code`` stays off unless asked for.
"""

from __future__ import annotations

import copy
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

from prm_gym.agents.base import Agent, Decision
from prm_gym.agents.hf_config import HFAgentConfig
from prm_gym.agents.parsing import parse_response
from prm_gym.checkpoints import ensure_pad_token, load_pretrained, max_positions, resolve_source, token_batches
from prm_gym.devices import resolve_device, resolve_dtype
from prm_gym.prm.context import Context
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
                return [self._ranked(state, n, temperature) for state in states]
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
        """Return ``n`` answers per prompt (prompt-major) and each answer's log-probability under the model."""
        batch = self.tokenizer.pad({"input_ids": prompts}, padding_side="left", return_tensors="pt").to(self.device)
        sampling = temperature > 0
        eos_ids = self._eos_ids()
        generation = GenerationConfig(
            max_new_tokens=self.config.max_new_tokens,
            do_sample=sampling,
            temperature=temperature if sampling else None,
            top_p=self.config.top_p if sampling else None,
            top_k=None,
            num_return_sequences=n,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=eos_ids or None,
            return_dict_in_generate=True,
            output_logits=True,
        )
        prompt_length = batch["input_ids"].shape[1]
        stop = _ActionLineComplete(self.tokenizer, prompt_length)
        if sampling:  # generate draws from torch's global generator: seed it from the agent's own
            torch.manual_seed(int(torch.randint(2**62, (), generator=self._generator)))
        output = self.model.generate(**batch, generation_config=generation, stopping_criteria=[stop])
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

    def _ranked(self, state: Context, n: int, temperature: float) -> list[Decision]:
        """Return ``n`` commands of ``state``: the most likely when greedy, else drawn from their softmax."""
        commands = state.admissible_commands
        logliks = torch.tensor(self._command_logliks(state))
        if temperature == 0:
            picks = [int(logliks.argmax())] * n
        else:
            weights = torch.softmax(logliks / temperature, dim=0)
            picks = torch.multinomial(weights, n, replacement=True, generator=self._generator).tolist()
        return [Decision(commands[i], None, float(logliks[i])) for i in picks]

    def _command_logliks(self, state: Context) -> list[float]:
        """Return log p(answer | prompt) for each admissible command (mean per token with ``length_normalise``).

        The prompt is run once; its key/value cache is copied for each batch of answers.
        """
        answers = self._answer_ids(state.admissible_commands)
        prompt = torch.tensor([self._prompt_ids(state, reserve=max(map(len, answers)))], device=self.device)
        out = self.model(input_ids=prompt, use_cache=True)
        first = out.logits[0, -1].float().log_softmax(-1)
        logliks = [0.0] * len(answers)
        lengths = [prompt.shape[1] + len(ids) for ids in answers]
        for rows in token_batches(lengths, self.config.max_batch_tokens):
            ids = self.tokenizer.pad(
                {"input_ids": [answers[row] for row in rows]}, padding_side="right", return_tensors="pt"
            ).to(self.device)
            cache = copy.deepcopy(out.cache)
            cache.batch_repeat_interleave(len(rows))
            mask = torch.cat(
                [torch.ones(len(rows), prompt.shape[1], dtype=torch.long, device=self.device), ids["attention_mask"]],
                dim=1,
            )
            logits = self.model(input_ids=ids["input_ids"], attention_mask=mask, cache=cache).logits
            logprobs = torch.cat([first.expand(len(rows), 1, -1), logits[:, :-1].float().log_softmax(-1)], dim=1)
            token_logprobs = logprobs.gather(-1, ids["input_ids"].unsqueeze(-1)).squeeze(-1) * ids["attention_mask"]
            totals = token_logprobs.sum(1)
            if self.config.length_normalise:
                totals = totals / ids["attention_mask"].sum(1)
            for row, total in zip(rows, totals.tolist(), strict=True):
                logliks[row] = total
        return logliks

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
