"""An LLM agent behind any OpenAI-compatible chat endpoint: vLLM, SGLang, llama.cpp's server, hosted APIs.

:class:`OpenAICompatibleAgent` renders each context with :func:`~prm_gym.prm.prompt.render_messages` (the one
renderer), sends one chat request per context, at most ``max_concurrency`` at once, and maps each answer onto an
admissible command with :func:`~prm_gym.agents.parsing.parse_response`, counting which match path fired.
Connection errors, timeouts, HTTP 429 and 5xx are retried with exponential backoff; when they persist, a
:class:`ServerUnreachableError` or :class:`ServerError` names the server and says what to check.

The API key is read from the environment variable *named* by ``OpenAIAgentConfig.api_key_env`` and is kept by
the HTTP client only: never in the config, ``repr``, logs or error messages. Needs ``pip install 'prm-gym[openai]'``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prm_gym.agents.base import Agent, Decision
from prm_gym.agents.parsing import parse_response
from prm_gym.prm.context import Context
from prm_gym.prm.prompt import PromptConfig, render_messages

__all__ = ["OpenAIAgentConfig", "OpenAICompatibleAgent", "ServerError", "ServerUnreachableError"]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")
#: Sent when ``api_key_env`` is unset: local servers accept any key unless started with one (vLLM's convention).
PLACEHOLDER_KEY = "EMPTY"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STATUS_PREFIX = re.compile(r"^Error code: \d+ - ")


class ServerError(RuntimeError):
    """The server answered with an error (or kept failing): the message names the server and the HTTP status."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        """Keep the HTTP ``status_code`` (``None`` when there was no answer)."""
        super().__init__(message)
        self.status_code = status_code


class ServerUnreachableError(ServerError):
    """No answer from the server (connection refused, DNS, timeouts) after every retry."""


@dataclass
class OpenAIAgentConfig:
    """Where the server is, how to sample from it and how hard to try; holds no secret, so it can be saved.

    Parameters that control the server: ``base_url``, ``model``, ``api_key_env``. Sampling: ``temperature``,
    ``top_p``, ``max_tokens``, ``seed``, ``logprobs``, ``use_n``. Reliability: ``timeout_s``, ``max_retries``,
    ``backoff_s``, ``backoff_factor``, ``backoff_max_s``, ``max_concurrency``. Prompt: ``prompt``,
    ``chars_per_token``.
    """

    #: The API root, up to and including ``/v1`` (``http://127.0.0.1:8000/v1`` for a local vLLM).
    base_url: str = "http://127.0.0.1:8000/v1"
    #: The served model's name; ``None`` asks the server (``GET /v1/models``) and uses the first it lists.
    model: str | None = None
    #: The NAME of the environment variable holding the API key, never the key. Unset (or ``None``): the
    #: placeholder key ``"EMPTY"`` is sent, which servers started without a key accept.
    api_key_env: str | None = "OPENAI_API_KEY"
    #: Sampling temperature (0 is greedy).
    temperature: float = 0.7
    #: Nucleus sampling mass.
    top_p: float = 1.0
    #: Most new tokens per answer (a REASON sentence and an ACTION line need far fewer than 128).
    max_tokens: int = 128
    #: Sent as the API's ``seed`` when set (the i-th of n separate samples gets ``seed + i``).
    seed: int | None = None
    #: Ask for token log-probabilities; ``Decision.logprob`` is then the answer's total log-probability.
    logprobs: bool = False
    #: Ask for several samples with the API's ``n``; a server that returns fewer is asked again one by one.
    use_n: bool = True
    #: Seconds to wait for one answer.
    timeout_s: float = 60.0
    #: Retries after the first attempt, on connection errors, timeouts, HTTP 429 and 5xx.
    max_retries: int = 3
    #: First backoff delay in seconds; then times ``backoff_factor`` per retry, at most ``backoff_max_s``.
    backoff_s: float = 0.5
    #: Backoff growth per retry.
    backoff_factor: float = 2.0
    #: Longest backoff delay (also caps a server's ``Retry-After``).
    backoff_max_s: float = 8.0
    #: Most requests in flight at once, over all calls of this agent.
    max_concurrency: int = 8
    #: How contexts are rendered; ``max_prompt_tokens`` is enforced by estimate (``chars_per_token``). The admissible
    #: commands are listed by default: a served chat model acts zero-shot and answers in free text, so it needs to
    #: see its options (turn it off for a model fine-tuned on the default, unlisted layout).
    prompt: PromptConfig = field(default_factory=lambda: PromptConfig(show_admissible_commands=True))
    #: Characters per token assumed when trimming old turns to ``prompt.max_prompt_tokens`` (the server's
    #: tokenizer is not at hand; 3 errs on the short side for English).
    chars_per_token: float = 3.0

    def __post_init__(self) -> None:
        """Check every field at once, naming the bad value (but never echoing what might be a key)."""
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"`base_url` should start with http:// or https://. Received {self.base_url!r}.")
        if self.api_key_env is not None and not _ENV_NAME.fullmatch(self.api_key_env):
            raise ValueError(
                "`api_key_env` must be the NAME of an environment variable (e.g. 'OPENAI_API_KEY'), "
                "not the key itself; export the key in that variable."
            )
        checks = [
            ("temperature", self.temperature >= 0, ">= 0"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
            ("max_tokens", self.max_tokens >= 1, ">= 1"),
            ("timeout_s", self.timeout_s > 0, "> 0"),
            ("max_retries", self.max_retries >= 0, ">= 0"),
            ("backoff_s", self.backoff_s >= 0, ">= 0"),
            ("backoff_factor", self.backoff_factor >= 1, ">= 1"),
            ("backoff_max_s", self.backoff_max_s >= 0, ">= 0"),
            ("max_concurrency", self.max_concurrency >= 1, ">= 1"),
            ("chars_per_token", self.chars_per_token > 0, "> 0"),
        ]
        for name, ok, bound in checks:
            if not ok:
                raise ValueError(f"`{name}` should be {bound}. Received {getattr(self, name)!r}.")

    def to_dict(self) -> dict[str, Any]:
        """Return the config as JSON-friendly data (no key: the config only names its variable)."""
        return dataclasses.asdict(self)


class OpenAICompatibleAgent(Agent):
    """A policy served behind an OpenAI-compatible chat API, prompted exactly as the PRMs are trained.

    Each answer's ``ACTION:`` maps onto an admissible command; ``match_counts`` counts the paths (``exact``,
    ``normalised``, ``nearest``) and ``usage`` counts requests, retries and tokens. :meth:`sample` asks for
    ``n`` answers in one request (the API's ``n``) where the server allows it, for :class:`BestOfNAgent`.

    Example:
        >>> config = OpenAIAgentConfig(base_url="http://127.0.0.1:8080/v1", model="smollm2", temperature=0.0)
        >>> agent = OpenAICompatibleAgent(config)
        >>> agent
        OpenAICompatibleAgent(base_url='http://127.0.0.1:8080/v1', model='smollm2', api_key_env='OPENAI_API_KEY')
        >>> agent.act("You are in a room.", {"admissible_commands": ["look", "inventory"]})  # doctest: +SKIP
        'look'
        >>> agent.match_counts  # doctest: +SKIP
        Counter({'exact': 1})
        >>> agent.close()
    """

    def __init__(self, config: OpenAIAgentConfig | None = None) -> None:
        """Build the client (no request is sent yet); the key is read from ``$<api_key_env>`` now."""
        super().__init__()
        try:
            import openai
        except ImportError as error:
            raise ImportError(
                "OpenAICompatibleAgent needs the `openai` client: pip install 'prm-gym[openai]'"
            ) from error
        self.config = config or OpenAIAgentConfig()
        self.name = f"openai:{self.config.model}" if self.config.model else "openai"
        key = os.environ.get(self.config.api_key_env) if self.config.api_key_env else None
        if not key:
            unset = f"${self.config.api_key_env} is not set" if self.config.api_key_env else "No `api_key_env`"
            logger.info("%s: sending the placeholder API key %r.", unset, PLACEHOLDER_KEY)
        self._secret = key or ""
        self._openai = openai
        # Retries are ours (backoff, clear errors), so the client's own are off.
        self._client = openai.OpenAI(
            api_key=key or PLACEHOLDER_KEY, base_url=self.config.base_url, timeout=self.config.timeout_s, max_retries=0
        )
        self._pool = ThreadPoolExecutor(self.config.max_concurrency, thread_name_prefix="openai-agent")
        self._model_lock, self._stats_lock = threading.Lock(), threading.Lock()
        self._model = self.config.model
        self._n_supported: bool | None = None if self.config.use_n else False
        #: How often each parse path mapped an answer to a command: ``exact``, ``normalised``, ``nearest``.
        self.match_counts: Counter[str] = Counter()
        #: Requests sent, retries, and the server's ``prompt_tokens`` and ``completion_tokens``.
        self.usage: Counter[str] = Counter()

    def __repr__(self) -> str:
        """Return where the agent asks, without the key."""
        c = self.config
        return f"{type(self).__name__}(base_url={c.base_url!r}, model={c.model!r}, api_key_env={c.api_key_env!r})"

    def decide(self, contexts: Sequence[Context]) -> list[Decision]:
        """Return one decision per context: one request each, at most ``max_concurrency`` in flight."""
        return [samples[0] for samples in self.sample(contexts, 1)]

    def sample(self, contexts: Sequence[Context], n: int) -> list[list[Decision]]:
        """Return ``n`` decisions per context, from one request with the API's ``n`` where the server allows it.

        Raises:
            ServerUnreachableError: the server did not answer after every retry.
            ServerError: it answered with an error that retrying does not fix, or kept answering 429/5xx.
            ValueError: ``n`` < 1, or a context has no admissible commands.
        """
        if n < 1:
            raise ValueError(f"`n` should be at least 1. Received {n}.")
        if any(not context.admissible_commands for context in contexts):
            raise ValueError("OpenAICompatibleAgent maps answers onto `admissible_commands`; a context has none.")
        messages = [self._messages(context) for context in contexts]
        answers: list[list[tuple[str, float | None]]] = [[] for _ in contexts]
        if n > 1 and self._n_supported is not False:
            jobs = [(i, n, self.config.seed) for i in range(len(contexts))]
        else:
            jobs = [(i, 1, self._nth_seed(j)) for i in range(len(contexts)) for j in range(n)]
        self._run(jobs, messages, answers)
        short = [(i, j) for i, got in enumerate(answers) for j in range(len(got), n)]
        if short:  # the server ignored (or refused) `n`: ask for the missing samples one by one
            if self._n_supported is None:
                logger.info("%s returns fewer choices than `n`: sampling one request per answer.", self.config.base_url)
            self._n_supported = False
            self._run([(i, 1, self._nth_seed(j)) for i, j in short], messages, answers)
        elif n > 1 and self._n_supported is None:
            self._n_supported = True
        decisions = []
        for context, got in zip(contexts, answers, strict=True):
            decisions.append([self._decision(text, logprob, context) for text, logprob in got[:n]])
        return decisions

    def close(self) -> None:
        """Stop the worker threads and close the HTTP connections."""
        self._pool.shutdown(wait=True)
        self._client.close()

    def __enter__(self) -> OpenAICompatibleAgent:
        """Return the agent, to be closed on leaving the ``with`` block."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the agent."""
        self.close()

    def _nth_seed(self, index: int) -> int | None:
        return None if self.config.seed is None else self.config.seed + index

    def _messages(self, context: Context) -> list[dict[str, str]]:
        """Render ``context``, dropping its oldest turns while the estimated length exceeds the budget."""
        budget, drop = self.config.prompt.max_prompt_tokens, 0
        while True:
            messages = render_messages(context, self.config.prompt, drop_turns=drop)
            chars = sum(len(message["content"]) for message in messages)
            if budget is None or drop == len(context.history) or chars / self.config.chars_per_token <= budget:
                return messages
            drop += 1

    def _decision(self, text: str, logprob: float | None, context: Context) -> Decision:
        parsed = parse_response(text, context.admissible_commands)
        with self._stats_lock:
            self.match_counts[parsed.match] += 1
        if parsed.match != "exact":
            logger.debug("Mapped %r to %r (%s).", parsed.raw_action, parsed.action, parsed.match)
        return Decision(parsed.action, parsed.reason, logprob)

    def _run(
        self,
        jobs: list[tuple[int, int, int | None]],
        messages: list[list[dict[str, str]]],
        answers: list[list[tuple[str, float | None]]],
    ) -> None:
        """Send ``(context index, n, seed)`` jobs through the pool and append their answers in job order."""
        model = self._resolve_model()
        futures: list[Future[list[tuple[str, float | None]]]] = [
            self._pool.submit(self._complete, model, messages[i], k, seed) for i, k, seed in jobs
        ]
        try:
            for (i, _, _), future in zip(jobs, futures, strict=True):
                answers[i].extend(future.result())
        finally:
            for future in futures:
                future.cancel()

    def _resolve_model(self) -> str:
        with self._model_lock:
            if self._model is None:
                listed = self._call(lambda: self._client.models.list().data, "list the served models")
                if not listed:
                    raise ServerError(f"The server at {self.config.base_url} serves no model; set `model`.")
                self._model = str(listed[0].id)
                logger.info("Using model %r, the first served at %s.", self._model, self.config.base_url)
            return self._model

    def _complete(
        self, model: str, messages: list[dict[str, str]], n: int, seed: int | None
    ) -> list[tuple[str, float | None]]:
        """Return (text, log-probability) per choice of one chat request; ``[]`` when the server refuses ``n``."""
        c = self.config
        request: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "temperature": c.temperature,
            "top_p": c.top_p,
            "max_tokens": c.max_tokens,
        }
        if n > 1:
            request["n"] = n
        if seed is not None:
            request["seed"] = seed
        if c.logprobs:  # llama.cpp's server returns none unless `top_logprobs` is given too
            request.update(logprobs=True, top_logprobs=0)
        try:
            response = self._call(lambda: self._client.chat.completions.create(**request), "answer")
        except ServerError as error:
            if n > 1 and error.status_code in (400, 422):
                return []
            raise
        with self._stats_lock:
            self.usage["prompt_tokens"] += getattr(response.usage, "prompt_tokens", 0) or 0
            self.usage["completion_tokens"] += getattr(response.usage, "completion_tokens", 0) or 0
        answers = []
        for choice in response.choices:
            tokens = getattr(choice.logprobs, "content", None) if c.logprobs else None
            logprob = sum(token.logprob for token in tokens) if tokens else None
            answers.append((choice.message.content or "", logprob))
        return answers

    def _call(self, request: Callable[[], _T], what: str) -> _T:
        """Return ``request()``, retried with backoff on connection errors, timeouts, 429 and 5xx."""
        c, openai, attempts = self.config, self._openai, self.config.max_retries + 1
        failure, status = "", None
        for attempt in range(attempts):
            retry_after = 0.0
            with self._stats_lock:
                self.usage["requests"] += 1
                self.usage["retries"] += attempt > 0
            try:
                return request()
            except openai.APIStatusError as error:
                message = _STATUS_PREFIX.sub("", self._redact(error.message)).rstrip(".")
                status, failure = error.status_code, f"HTTP {error.status_code}: {message}"
                retry_after = _seconds(error.response.headers.get("retry-after"))
            except openai.APITimeoutError:
                status, failure = None, f"no answer within {c.timeout_s:g} s"
            except openai.APIConnectionError as error:
                status, failure = None, self._redact(str(error.__cause__ or error)) or "connection error"
            if status is not None and status != 429 and status < 500:
                break  # the request itself is wrong: retrying cannot help
            if attempt + 1 < attempts:
                delay = min(c.backoff_max_s, max(c.backoff_s * c.backoff_factor**attempt, retry_after))
                logger.warning("%s could not %s (%s); retry %d/%d in %.2g s.", c.base_url, what, failure,
                               attempt + 1, c.max_retries, delay)  # fmt: skip
                time.sleep(delay)
        # Raised outside the `except` blocks so that no chained exception carries the request (and its key).
        raise self._error(what, failure, status, attempt + 1)

    def _error(self, what: str, failure: str, status: int | None, attempts: int) -> ServerError:
        """Return the error for a request that failed ``attempts`` times, last with ``failure`` (HTTP ``status``)."""
        c = self.config
        if status is None:
            timeout = " and is `timeout_s` long enough" if failure.startswith("no answer") else ""
            return ServerUnreachableError(f"Cannot reach the OpenAI-compatible server at {c.base_url} after "
                                          f"{attempts} attempts: {failure}. Is it running{timeout}?")  # fmt: skip
        unset = f" ${c.api_key_env} is not set: export the key there." if c.api_key_env else " Set `api_key_env`."
        hint = {
            401: unset if not self._secret else f" Is the key in ${c.api_key_env} (api_key_env) right?",
            403: " Does the key allow this model?",
            404: " Check `base_url` (it usually ends in /v1) and `model`.",
        }.get(status, "")
        tried = f" after {attempts} attempts" if attempts > 1 else ""
        message = f"The OpenAI-compatible server at {c.base_url} could not {what}{tried}: {failure}.{hint}"
        return ServerError(message, status)

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text


def _seconds(value: str | None) -> float:
    """Return a ``Retry-After`` header's seconds (0 when absent or an HTTP date)."""
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0
