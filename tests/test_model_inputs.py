"""What reaches the model: lone surrogates become U+FFFD, and prompts that do not fit its positions are refused.

Both apply to the reward model and the HF agent alike, since both encode contexts through
``prm_gym.prm.prompt.encode_contexts``.
"""

from __future__ import annotations

import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from conftest import SHARED_TOKENIZER, tiny_llama  # noqa: E402

from prm_gym.agents import HFAgent, HFAgentConfig  # noqa: E402
from prm_gym.prm import Context, ProcessRewardModel, PromptConfig  # noqa: E402
from prm_gym.prm.prompt import clean_text  # noqa: E402

pytestmark = pytest.mark.skipif(not SHARED_TOKENIZER.is_dir(), reason=f"no shared tokenizer at {SHARED_TOKENIZER}")

#: Positions of the small models below: room for a short game's prompt, not for a long history.
POSITIONS = 320


def game(mark: str = "", turns: int = 1, observation: str = "You arrive at desk 1.") -> Context:
    """A state after ``turns`` turns, with ``mark`` inside the task, the history, the observation and a command."""
    state = Context(
        task=f"put a mug{mark} in the sink.",
        observation=f"You are in a room{mark}.",
        admissible_commands=(f"go to desk{mark} 1", "look", "inventory"),
    )
    for i in range(turns):
        state = state.propose(f"go to desk{mark} 1" if i == 0 else "look").advance(
            f"{observation}{mark} (turn {i})", {"admissible_commands": [f"go to desk{mark} 1", "look", "inventory"]}
        )
    return state


def prm(**config) -> ProcessRewardModel:
    model, tokenizer = tiny_llama("LlamaForSequenceClassification", num_labels=1, **config)
    return ProcessRewardModel(model, tokenizer)


def agent(mode: str, **config) -> HFAgent:
    return HFAgent(*tiny_llama("LlamaForCausalLM", **config), HFAgentConfig(mode=mode, max_new_tokens=16))


# Lone surrogates.


def test_clean_text_replaces_lone_surrogates_and_joins_pairs():
    assert clean_text("a\ud800b\udfff") == "a\ufffdb\ufffd"
    assert clean_text("\ud83d\ude00") == "\U0001f600"
    assert clean_text("plain, é, \U0001f600") == "plain, é, \U0001f600"


def test_the_reward_model_scores_lone_surrogates_as_replacement_characters():
    model = prm()
    bad, clean = game("\ud800", turns=2), game("\ufffd", turns=2)
    scores = model.score([bad.propose("go to desk\udfff 1", reason="It is \ud800 there."), bad.propose("look")])
    expected = model.score([clean.propose("go to desk\ufffd 1", reason="It is \ufffd there."), clean.propose("look")])
    assert scores == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("mode", ["generate", "loglik"])
def test_the_hf_agent_decides_on_lone_surrogates_as_replacement_characters(mode: str):
    policy = agent(mode)
    bad, clean = game("\ud800", turns=2), game("\ufffd", turns=2)
    (decision,) = policy.decide([bad])
    (expected,) = policy.decide([clean])
    assert decision.action in bad.admissible_commands
    assert bad.admissible_commands.index(decision.action) == clean.admissible_commands.index(expected.action)
    assert decision.logprob == pytest.approx(expected.logprob, abs=1e-4)


# Prompts longer than the model's positions.


def suggested_budget(message: str) -> int:
    match = re.search(r"`max_prompt_tokens` \(now None\) to at most (\d+)", message)
    assert match, message
    return int(match.group(1))


def test_the_reward_model_suggests_a_max_prompt_tokens_that_fits():
    model = prm(max_position_embeddings=POSITIONS)
    model.prompt_config = PromptConfig(max_prompt_tokens=None)
    proposal = game(turns=30).propose("look")
    too_long = rf"contexts\[0\] renders to \d+ tokens, more than the model's {POSITIONS} positions"
    with pytest.raises(ValueError, match=too_long) as e:
        model.score([proposal])
    model.prompt_config = PromptConfig(max_prompt_tokens=suggested_budget(str(e.value)))
    (score,) = model.score([proposal])  # the suggestion works: older turns are dropped to fit
    assert 0.0 <= score <= 1.0
    assert len(model.encode([proposal])["input_ids"][0]) <= POSITIONS


def test_the_reward_model_says_when_only_a_longer_context_helps():
    model = prm(max_position_embeddings=POSITIONS)
    proposal = game(turns=3, observation="You see a desk, " * 60).propose("look")
    with pytest.raises(ValueError, match="even without its history") as error:
        model.score([proposal])
    assert "longer context" in str(error.value) and "max_prompt_tokens" not in str(error.value)


@pytest.mark.parametrize("mode", ["generate", "loglik"])
def test_the_hf_agent_refuses_a_prompt_without_room_for_its_answer(mode: str):
    policy = agent(mode, max_position_embeddings=POSITIONS)
    policy.config.prompt = PromptConfig(max_prompt_tokens=None)
    state = game(turns=30)
    with pytest.raises(ValueError, match=rf"more than the model's {POSITIONS} positions less \d+ for the answer") as e:
        policy.decide([state])
    policy.config.prompt = PromptConfig(max_prompt_tokens=suggested_budget(str(e.value)))
    (decision,) = policy.decide([state])  # the suggestion works
    assert decision.action in state.admissible_commands


@pytest.mark.parametrize("mode", ["generate", "loglik"])
def test_the_hf_agent_says_when_only_a_longer_context_helps(mode: str):
    policy = agent(mode, max_position_embeddings=POSITIONS)
    with pytest.raises(ValueError, match="even without its history.*longer context") as error:
        policy.decide([game(turns=3, observation="You see a desk, " * 60)])
    assert "max_prompt_tokens" not in str(error.value)


def test_the_hf_agent_suggests_fewer_new_tokens_when_that_is_what_fits():
    policy = agent("generate", max_position_embeddings=POSITIONS)
    policy.config.max_new_tokens = POSITIONS - 10
    state = game(turns=0)
    with pytest.raises(ValueError, match=r"lower `max_new_tokens` \(now 310\) to at most \d+") as e:
        policy.decide([state])
    policy.config.max_new_tokens = int(re.search(r"to at most (\d+)", str(e.value)).group(1))
    (decision,) = policy.decide([state])  # the suggestion works
    assert decision.action in state.admissible_commands
