r"""The one prompt renderer: a :class:`~prm_gym.prm.context.Context` as chat messages or model input text.

Training, scoring and the LLM agents all render through here, so what a reward model is trained on is what
it scores and what a policy reads. A context becomes a conversation::

    system     the instructions (PromptConfig.system_prompt)
    user       "Your task is to: <task>" + the first observation kept
    assistant  "ACTION: <command>"                  one user/assistant pair per history turn
    ...
    user       the current observation
    assistant  "REASON: <reason>\nACTION: <proposed action>"    only when the context proposes an action

**Append-only.** A turn is rendered the same whether it is the current turn (with the action proposed) or a
history turn, so the render of turn t+1 begins with the render of turn t and its action, token for token. One
forward over an episode's last render then holds every turn's positions: key/value caches carry over from turn
to turn, and training reads every answer of an episode in one forward (:func:`~prm_gym.policy.sft.sft_examples`).
Two things break it, at a cost measured in ``benchmarks/RESULTS.md`` ("Prompt layouts"): dropping old turns to
fit the token budget, and ``show_admissible_commands``, which lists the commands under the current observation
only (each history turn keeping its list would make renders ~4x longer: 6,800 tokens at turn 29 of random play
instead of 1,660; without the list a cached turn adds ~46 new tokens instead of ~230). The commands are not
needed to act: loglik policies rank exactly the admissible commands, generated answers are mapped onto them,
and a reward model scores one proposed action.

When the text would exceed ``max_prompt_tokens``, the oldest history turns are dropped (a line says how
many); the task, the current observation and the proposed action are never cut. A reason is shown for the
proposed action only (``show_reason``; history turns keep the action): it breaks the render at the answer of the
last turn, a few tokens.

:func:`encode_text` is the one place where text enters a tokenizer (lone surrogates, which Rust tokenizers
refuse, become U+FFFD there), and :func:`encode_contexts` the one way contexts become model input: rendered,
tokenized, and checked against the model's positions, with an error that says what would make them fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prm_gym.prm.context import Context

__all__ = [
    "SYSTEM_PROMPT",
    "PromptConfig",
    "answer_texts",
    "clean_text",
    "encode_answers",
    "encode_contexts",
    "encode_text",
    "format_action",
    "render_messages",
    "render_text",
]

SYSTEM_PROMPT = (
    "You are an expert agent in a text-based household game. Each turn you read what you observe and reply with "
    "exactly one of the admissible commands, to reach the task's goal in as few steps as possible. Answer in the "
    "form:\nREASON: <one short sentence>\nACTION: <command>"
)


class Tokenizer(Protocol):
    """What the renderer needs of a Hugging Face tokenizer."""

    chat_template: str | None

    def __call__(self, text: str, add_special_tokens: bool = ...) -> Any: ...  # noqa: D102

    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: Any) -> Any: ...  # noqa: D102


@dataclass
class PromptConfig:
    """How contexts are rendered; saved with every model and dataset so that renders can be repeated."""

    #: The system message.
    system_prompt: str = SYSTEM_PROMPT
    #: Token budget of the rendered text; older turns are dropped to fit. ``None`` keeps every turn.
    max_prompt_tokens: int | None = 2048
    #: List the admissible commands after the current observation (not append-only: history turns do not keep
    #: their lists; for models that act zero-shot and need to see their options, such as a served chat model).
    show_admissible_commands: bool = False
    #: Render the proposed action's reason (``REASON: ...``) when the context has one.
    show_reason: bool = True


def format_action(action: str, reason: str | None = None) -> str:
    r"""Return the assistant's answer: ``"REASON: <reason>\nACTION: <action>"``, or only the ACTION line.

    Example:
        >>> format_action("go to sink 1", "The mug may be there.")
        'REASON: The mug may be there.\nACTION: go to sink 1'
    """
    return f"REASON: {reason}\nACTION: {action}" if reason else f"ACTION: {action}"


def render_messages(
    context: Context, config: PromptConfig | None = None, *, drop_turns: int = 0
) -> list[dict[str, str]]:
    """Return the context as chat messages, without its ``drop_turns`` oldest history turns.

    Example:
        >>> ctx = Context(task="put a mug in the sink.", history=(("You are in a room.", "go to desk 1"),),
        ...               observation="You arrive at desk 1.", admissible_commands=("look",), action="look")
        >>> [m["role"] for m in render_messages(ctx)]
        ['system', 'user', 'assistant', 'user', 'assistant']
        >>> render_messages(ctx, drop_turns=1)[1]["content"].splitlines()[:3]
        ['Your task is to: put a mug in the sink.', '', '(1 earlier turn omitted)']
    """
    config = config or PromptConfig()
    if not 0 <= drop_turns <= len(context.history):
        raise ValueError(f"`drop_turns` should be in [0, {len(context.history)}]. Received {drop_turns}.")
    header = f"Your task is to: {context.task}" if context.task else ""
    if drop_turns:
        header += f"\n\n({drop_turns} earlier turn{'s' if drop_turns > 1 else ''} omitted)"
    current = context.observation
    if config.show_admissible_commands and context.admissible_commands:
        current += "\n\nAdmissible commands: " + ", ".join(context.admissible_commands)
    observations = [observation for observation, _ in context.history[drop_turns:]] + [current]
    actions = [format_action(action) for _, action in context.history[drop_turns:]]
    messages = [{"role": "system", "content": config.system_prompt}]
    for i, observation in enumerate(observations):
        content = f"{header}\n\n{observation}" if i == 0 and header else observation
        messages.append({"role": "user", "content": content})
        if i < len(actions):
            messages.append({"role": "assistant", "content": actions[i]})
    if context.action is not None:
        reason = context.reason if config.show_reason else None
        messages.append({"role": "assistant", "content": format_action(context.action, reason)})
    return messages


def render_text(context: Context, tokenizer: Tokenizer, config: PromptConfig | None = None) -> str:
    """Return the context as one model input text, older turns dropped to fit ``config.max_prompt_tokens``.

    With a proposed action (reward models) the text ends with the assistant's answer; without one (policies)
    it ends with the template's prompt for the assistant's turn. Tokenizers without a chat template get a plain
    ``Role: content`` layout.
    """
    return _fitted(context, tokenizer, config or PromptConfig())[0]


def _fitted(context: Context, tokenizer: Tokenizer, config: PromptConfig) -> tuple[str, list[int]]:
    """Return :func:`render_text`'s text and its tokens (without special tokens), each rendered text tokenized once."""

    def render(drop_turns: int) -> tuple[str, list[int]]:
        text = _render(context, tokenizer, config, drop_turns)
        return text, encode_text(tokenizer, text, add_special_tokens=False)

    def fits(rendered: tuple[str, list[int]]) -> bool:
        return config.max_prompt_tokens is None or len(rendered[1]) <= config.max_prompt_tokens

    full = render(0)
    if fits(full) or not context.history:
        return full
    # Fewest dropped turns that fit: the token count only shrinks as turns are dropped, so bisect.
    low, high = 1, len(context.history)
    shortest = render(high)
    if not fits(shortest):
        return shortest  # even the task, the current observation and the action alone exceed the budget
    best = shortest
    while low < high:
        middle = (low + high) // 2
        candidate = render(middle)
        if fits(candidate):
            high, best = middle, candidate
        else:
            low = middle + 1
    return best


def clean_text(text: str) -> str:
    r"""Return ``text`` with each lone surrogate replaced by U+FFFD (a surrogate pair becomes its character).

    Python strings can hold lone surrogates (JSON's ``"\ud800"`` escapes, ``surrogateescape`` decoding), which
    are not Unicode text: Rust tokenizers refuse them with a ``TypeError``.

    Example:
        >>> clean_text("bad \ud800 text, fine \ud83d\ude00")
        'bad \ufffd text, fine \U0001f600'
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def encode_text(tokenizer: Tokenizer, text: str, *, add_special_tokens: bool) -> list[int]:
    """Return the token ids of ``text``: the one place where text enters a tokenizer (through :func:`clean_text`)."""
    return list(tokenizer(clean_text(text), add_special_tokens=add_special_tokens)["input_ids"])


def encode_contexts(
    contexts: Sequence[Context],
    tokenizer: Tokenizer,
    config: PromptConfig | None = None,
    *,
    positions: int | None = None,
    reserve: int = 0,
    reserved_by: str | None = None,
) -> list[list[int]]:
    """Return each context rendered by :func:`render_text` as model input ids, checked to fit the model.

    A chat template writes its own special tokens; the plain layout gets the tokenizer's (BOS, [CLS]).

    Args:
        contexts: The contexts, with a proposed action (reward models) or without (policies).
        tokenizer: The model's tokenizer.
        config: How to render; default :class:`PromptConfig`'s.
        positions: The model's positions (``max_position_embeddings``); ``None`` checks nothing.
        reserve: Positions each row must leave free after its input (the tokens a policy will generate or score).
        reserved_by: The setting that ``reserve`` comes from (``"`max_new_tokens`"``), when the user can lower it.

    Raises:
        ValueError: when a row does not fit; the message says whether a smaller ``max_prompt_tokens`` would make
            it fit (older turns dropped) or only a longer-context model or shorter observations can.
    """
    config = config or PromptConfig()
    special = not tokenizer.chat_template
    rendered = [_fitted(context, tokenizer, config) for context in contexts]
    # A chat template writes its own special tokens: the tokens counted against the budget are the input.
    ids = [encode_text(tokenizer, text, add_special_tokens=True) if special else tokens for text, tokens in rendered]
    for i, row in enumerate(ids):
        if positions is not None and len(row) + reserve > positions:
            fit = _Fit(tokenizer, config, positions, reserve, reserved_by)
            raise ValueError(_too_long(f"contexts[{i}]", contexts[i], len(row), fit))
    return ids


def answer_texts(commands: Sequence[str], tokenizer: Tokenizer, config: PromptConfig | None = None) -> list[str]:
    """Return the text of the assistant's answer ``ACTION: <command>`` for each command, as rendered.

    The answer is what a rendered context gains when a command is proposed (the chat template's end-of-turn
    included): a policy's prompt (:func:`encode_contexts` of a context without action) followed by it is what the
    policy scores (loglik), generates, and is fine-tuned on. It is found once per call on a one-turn context that
    no token budget truncates: the text around a marker command, with each command put in its place. Without a
    chat template nothing ends the answer, so the eos token does ("go to desk 1" is then not a prefix of "go to
    desk 10").

    Raises:
        ValueError: when the chat template does not extend the generation prompt with the answer.
    """
    config = config or PromptConfig()
    probe, marker = Context(task="", observation="."), "\x00"
    prompt = render_text(probe, tokenizer, config)
    full = render_text(probe.propose(marker), tokenizer, config)
    if not full.startswith(prompt) or full.count(marker) != 1:
        raise ValueError(
            "The tokenizer's chat template does not extend the generation prompt with the answer, so a policy's "
            "answers cannot be told apart from its prompt with it."
        )
    before, after = full[len(prompt) :].split(marker)
    after += "" if tokenizer.chat_template else getattr(tokenizer, "eos_token", None) or ""
    return [before + command + after for command in commands]


def encode_answers(
    commands: Sequence[str], tokenizer: Tokenizer, config: PromptConfig | None = None
) -> list[list[int]]:
    """Return the tokens of the assistant's answer (:func:`answer_texts`) for each command.

    Raises:
        ValueError: when the chat template does not extend the generation prompt with the answer.
    """
    texts = answer_texts(commands, tokenizer, config)
    return [encode_text(tokenizer, text, add_special_tokens=False) for text in texts]


def _render(context: Context, tokenizer: Tokenizer, config: PromptConfig, drop_turns: int) -> str:
    """Return the context's messages without ``drop_turns`` oldest turns as one text (template or plain layout)."""
    messages = render_messages(context, config, drop_turns=drop_turns)
    generation = context.action is None
    if tokenizer.chat_template:
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation))
    plain = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
    return plain + ("\n\nAssistant:" if generation else "")


@dataclass(frozen=True)
class _Fit:
    """What a row of model input must fit: the model's positions less a reserve, rendered with a config."""

    tokenizer: Tokenizer
    config: PromptConfig
    positions: int
    reserve: int
    reserved_by: str | None


def _too_long(name: str, context: Context, length: int, fit: _Fit) -> str:
    """Return why ``context`` (``length`` input tokens) does not fit, and the remedies that would help."""
    tokenizer, config, positions, reserve = fit.tokenizer, fit.config, fit.positions, fit.reserve
    special = not tokenizer.chat_template
    room = positions - reserve
    where = f"the model's {positions} positions" + (f" less {reserve} for the answer" if reserve else "")
    bare = _render(context, tokenizer, config, len(context.history))
    shortest = len(encode_text(tokenizer, bare, add_special_tokens=special))
    if shortest > room:
        if fit.reserved_by and shortest < positions:
            return (
                f"{name} is {shortest} tokens even without its history, more than {where}: lower {fit.reserved_by} "
                f"(now {reserve}) to at most {positions - shortest}, use a model with a longer context, or shorten "
                "the observations."
            )
        parts = "system prompt, task, current observation"
        parts += (
            " with its admissible commands" if config.show_admissible_commands and context.admissible_commands else ""
        )
        parts += " and proposed action" if context.action is not None else ""
        return (
            f"{name} is {shortest} tokens even without its history (the {parts} alone), more than {where}: use a "
            "model with a longer context, or shorten the observations."
        )
    specials = shortest - len(encode_text(tokenizer, bare, add_special_tokens=False))
    return (
        f"{name} renders to {length} tokens, more than {where}: set the prompt's `max_prompt_tokens` "
        f"(now {config.max_prompt_tokens}) to at most {room - specials} so that older turns are dropped to fit."
    )
