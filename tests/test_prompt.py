"""The prompt renderer: chat layout, the shared tokenizer's template, truncation by token budget."""

import itertools

import pytest
from conftest import SHARED_TOKENIZER

from prm_gym.prm import Context, PromptConfig, render_messages, render_text


@pytest.fixture(scope="module")
def tokenizer():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(SHARED_TOKENIZER)


def make_context(turns: int, action: str | None = "take mug 1 from desk 1") -> Context:
    history = tuple((f"You arrive at place {i}. On it, you see a pen {i} and a book {i}.", f"go to place {i + 1}")
                    for i in range(turns))
    return Context(task="put a clean mug in coffeemachine.", history=history,
                   observation="You arrive at desk 1. On the desk 1, you see a mug 1.",
                   admissible_commands=("go to sink 1", "take mug 1 from desk 1"), action=action, reason="It is here.")


def test_messages_alternate_and_end_with_the_proposed_action():
    messages = render_messages(make_context(2))
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    first = messages[1]["content"]
    assert first.startswith("Your task is to: put a clean mug in coffeemachine.\n\nYou arrive at place 0")
    assert messages[2]["content"] == "ACTION: go to place 1"
    assert messages[-2]["content"] == "You arrive at desk 1. On the desk 1, you see a mug 1."  # no list by default
    assert messages[-1]["content"] == "REASON: It is here.\nACTION: take mug 1 from desk 1"


def test_config_switches():
    config = PromptConfig(show_admissible_commands=True, show_reason=False, system_prompt="Play.")
    messages = render_messages(make_context(1), config)
    assert messages[0]["content"] == "Play." and "Admissible" not in messages[1]["content"]  # history: no list
    assert messages[-2]["content"].endswith("\n\nAdmissible commands: go to sink 1, take mug 1 from desk 1")
    assert messages[-1]["content"] == "ACTION: take mug 1 from desk 1"


@pytest.fixture(scope="module")
def played_contexts():
    """Every turn of two real 12-step random episodes (tiny games), each with the action taken."""
    import random

    import gymnasium as gym

    import prm_gym  # noqa: F401

    env, rng, episodes = gym.make("prm_gym/ALFWorld-v0", split="tiny"), random.Random(0), []
    for seed in (0, 1):
        observation, info = env.reset(seed=seed)
        context, contexts = Context.from_reset(observation, info), []
        for _ in range(12):
            contexts.append(context.propose(rng.choice(context.admissible_commands)))
            observation, _, terminated, _, info = env.step(contexts[-1].action)
            if terminated:
                break
            context = contexts[-1].advance(observation, info)
        episodes.append(contexts)
    env.close()
    return episodes


@pytest.mark.parametrize("reason", [None, "It is here."])
def test_renders_are_append_only_token_for_token(tokenizer, played_contexts, reason):
    """Turn t's render with its action is where turn t+1's render starts, in tokens (one forward serves both)."""
    config = PromptConfig(max_prompt_tokens=None)
    checked = 0
    for contexts in played_contexts:
        for current, following in itertools.pairwise(contexts):
            answered = tokenizer(render_text(current, tokenizer, config))["input_ids"]
            later = tokenizer(render_text(following.propose(following.action, reason), tokenizer, config))["input_ids"]
            assert later[: len(answered)] == answered
            checked += 1
    assert checked >= 20
    # A reason is shown on the current turn only: turn t's render with a reason is not where turn t+1 starts.
    current, following = played_contexts[0][0], played_contexts[0][1]
    with_reason = tokenizer(render_text(current.propose(current.action, "Why not."), tokenizer, config))["input_ids"]
    assert tokenizer(render_text(following, tokenizer, config))["input_ids"][: len(with_reason)] != with_reason


def test_listing_the_commands_breaks_append_only_at_the_list(tokenizer, played_contexts):
    config = PromptConfig(max_prompt_tokens=None, show_admissible_commands=True)
    current, following = played_contexts[0][0], played_contexts[0][1]
    answered = render_text(current, tokenizer, config)
    later = render_text(following, tokenizer, config)
    assert "Admissible commands:" in answered and not later.startswith(answered)
    assert later.startswith(answered.split("\n\nAdmissible commands:")[0])


def test_policy_prompt_ends_with_the_assistant_turn(tokenizer):
    text = render_text(make_context(1, action=None), tokenizer)
    assert text.endswith("<|im_start|>assistant\n") and "take mug 1 from desk 1" not in text


def test_truncation_drops_the_oldest_turns_only(tokenizer):
    context = make_context(40)
    full = render_text(context, tokenizer, PromptConfig(max_prompt_tokens=None))
    budget = 600
    text = render_text(context, tokenizer, PromptConfig(max_prompt_tokens=budget))
    assert len(tokenizer(full)["input_ids"]) > budget >= len(tokenizer(text)["input_ids"])
    assert "earlier turns omitted" in text and "place 0." not in text and "place 39." in text
    assert "Your task is to: put a clean mug" in text and context.observation in text
    assert text.rstrip().endswith("ACTION: take mug 1 from desk 1<|im_end|>")
    # As many turns as fit: one more would exceed the budget.
    dropped = int(text.split(" earlier turns omitted")[0].rsplit("(", 1)[1])
    one_more = render_messages(context, PromptConfig(max_prompt_tokens=budget), drop_turns=dropped - 1)
    longer = tokenizer.apply_chat_template(one_more, tokenize=False)
    assert len(tokenizer(longer)["input_ids"]) > budget


def test_a_budget_too_small_still_keeps_task_observation_and_action(tokenizer):
    text = render_text(make_context(3), tokenizer, PromptConfig(max_prompt_tokens=10))
    assert "(3 earlier turns omitted)" in text and "mug 1" in text and "coffeemachine" in text


def test_tokenizer_without_chat_template(tokenizer):
    class Plain:
        chat_template = None

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": text.split()}

    text = render_text(make_context(1), Plain())
    assert text.startswith("System: ") and "\n\nUser: Your task is to:" in text
    assert text.endswith("Assistant: REASON: It is here.\nACTION: take mug 1 from desk 1")
