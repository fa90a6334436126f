"""HFAgent on a tiny random Llama with the shared SmolLM2 tokenizer, and once on the real SmolLM2 GGUF."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gymnasium as gym
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import SHARED_GGUF, SHARED_TOKENIZER, tiny_llama  # noqa: E402

import prm_gym  # noqa: E402, F401
from prm_gym.agents import HFAgent, HFAgentConfig  # noqa: E402
from prm_gym.agents.hf_agent import _ActionLineComplete  # noqa: E402
from prm_gym.agents.registry import make_agent  # noqa: E402
from prm_gym.evaluation import EvalConfig, evaluate  # noqa: E402
from prm_gym.prm import Context  # noqa: E402

pytestmark = pytest.mark.skipif(not SHARED_TOKENIZER.is_dir(), reason=f"no shared tokenizer at {SHARED_TOKENIZER}")


@pytest.fixture(scope="module")
def lm():
    return tiny_llama("LlamaForCausalLM")


def states() -> list[Context]:
    first = Context(
        task="put a clean mug in coffeemachine.",
        observation="You are in the middle of a room. Looking quickly around you, you see a sinkbasin 1, a desk 1.",
        admissible_commands=("go to sinkbasin 1", "go to desk 1", "look", "inventory"),
    )
    second = first.propose("go to desk 1").advance(
        "You arrive at desk 1. On the desk 1, you see a mug 1.",
        {"admissible_commands": ["take mug 1 from desk 1", "go to sinkbasin 1", "look"]},
    )
    return [first, second, second.propose("look").advance("Nothing happens.", {"admissible_commands": ["look"]})]


def assert_played_admissibly(results, cap: int) -> None:
    """No tiny game can be won within ``cap`` steps (their walkthroughs take 4 to 8), so each episode must run to
    the cap; replayed in its game, every action must be admissible where it was sent."""
    assert [(r.won, len(r.steps)) for r in results] == [(False, cap)] * len(results)
    env = gym.make("prm_gym/ALFWorld-v0", split="tiny", privileged=("walkthrough",))
    for result in results:
        _, info = env.reset(options={"game": result.game_file})
        assert info["game_file"] == result.game_file and len(info["walkthrough"]) > cap
        for action in result.actions:
            assert action in info["admissible_commands"]
            _, _, _, _, info = env.step(action)
    env.close()


def reference_logliks(agent: HFAgent, state: Context) -> list[float]:
    """log p(answer | prompt) per command by one full forward each (no cache, no batching)."""
    prompt = agent._prompt_ids(state)
    totals = []
    with torch.inference_mode():
        for command in state.admissible_commands:
            (answer,) = agent._answer_ids([command])
            logprobs = agent.model(input_ids=torch.tensor([prompt + answer])).logits[0].float().log_softmax(-1)
            totals.append(sum(logprobs[len(prompt) + j - 1, token].item() for j, token in enumerate(answer)))
    return totals


@pytest.mark.parametrize("mode", ["generate", "loglik"])
def test_decisions_are_admissible_and_greedy_is_deterministic(lm, mode: str) -> None:
    agent = HFAgent(*lm, HFAgentConfig(mode=mode, max_new_tokens=24))
    first = agent.decide(states())
    assert [d.action in s.admissible_commands for d, s in zip(first, states(), strict=True)] == [True] * 3
    assert all(isinstance(d.logprob, float) and d.logprob < 0 for d in first)
    again = agent.decide(states())  # the second call reads the prompts from the first one's cache: other shapes
    assert [d.action for d in again] == [d.action for d in first]
    assert [d.logprob for d in again] == pytest.approx([d.logprob for d in first], abs=1e-3)
    if mode == "generate":
        assert sum(agent.match_counts.values()) == 6
        assert set(agent.match_counts) <= {"exact", "normalised", "nearest"}


def test_generation_batched_equals_one_at_a_time(lm) -> None:
    agent = HFAgent(*lm, HFAgentConfig(max_new_tokens=16))
    batched = agent.decide(states())
    alone = [agent.decide([state])[0] for state in states()]
    assert [d.action for d in batched] == [d.action for d in alone]
    assert [d.logprob for d in batched] == pytest.approx([d.logprob for d in alone], abs=1e-3)


def test_generation_logprob_is_the_answer_log_likelihood(lm) -> None:
    """The reported logprob equals a teacher-forced forward over the prompt and the generated tokens."""
    model, tokenizer = lm
    agent = HFAgent(model, tokenizer, HFAgentConfig(max_new_tokens=12))
    state = states()[1]
    prompt = agent._prompt_ids(state)
    texts, logprobs = agent._generate([prompt], 1, temperature=0.0)
    answer = tokenizer(texts[0], add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prompt + answer])).logits[0].float().log_softmax(-1)
    expected = sum(logits[len(prompt) + j - 1, token].item() for j, token in enumerate(answer))
    if len(answer) < 12:  # the answer ended with an eos token, which decoding skipped: add its log-probability
        expected += logits[-1, agent._eos_ids()[0]].item()
    assert logprobs[0] == pytest.approx(expected, abs=1e-3)


def test_sampling_gives_n_per_context_and_reseeding_repeats_them(lm) -> None:
    agent = HFAgent(*lm, HFAgentConfig(max_new_tokens=12, sample_temperature=1.5))
    agent.reset(seed=3)
    first = agent.sample(states()[:2], 4)
    assert [len(samples) for samples in first] == [4, 4]
    assert len({d.logprob for d in first[0]}) > 1  # varied answers
    agent.reset(seed=3)
    again = agent.sample(states()[:2], 4)  # the prompts come from the prefix cache now: same up to rounding
    assert [(d.action, d.reason) for d in again[0] + again[1]] == [(d.action, d.reason) for d in first[0] + first[1]]
    assert [d.logprob for d in again[0] + again[1]] == pytest.approx([d.logprob for d in first[0] + first[1]], abs=1e-4)


def batch_logliks(agent: HFAgent, contexts: list[Context]) -> list[list[float]]:
    """The agent's log-likelihood of every admissible command of each context, in one batched call."""
    answers = [agent._answer_ids(context.admissible_commands) for context in contexts]
    prompts = [agent._prompt_ids(context) for context in contexts]
    with torch.inference_mode():
        return agent._command_logliks(prompts, answers)[0]


@pytest.mark.parametrize("reuse", [True, False])
def test_loglik_equals_full_forward_and_picks_the_most_likely(lm, reuse: bool) -> None:
    agent = HFAgent(*lm, HFAgentConfig(mode="loglik", prompt_reuse=reuse))
    expected = [reference_logliks(agent, state) for state in states()]
    for max_batch_tokens in (16384, 1):  # all states in one batch, then one state per forward: same values
        agent.config.max_batch_tokens = max_batch_tokens
        logliks = batch_logliks(agent, states())
        assert [len(row) for row in logliks] == [len(row) for row in expected]
        for row, expected_row in zip(logliks, expected, strict=True):
            assert row == pytest.approx(expected_row, abs=1e-4)
    agent.config.max_batch_tokens = 16384
    decisions = agent.decide(states())
    for decision, state, expected_row in zip(decisions, states(), expected, strict=True):
        best = max(range(len(expected_row)), key=expected_row.__getitem__)
        assert decision.action == state.admissible_commands[best]
        assert decision.logprob == pytest.approx(expected_row[best], abs=1e-4)


def play(agent: HFAgent, turns: int) -> list[Context]:
    """Play a tiny game for ``turns`` turns through ``decide``; return the contexts decided, in order."""
    env = gym.make("prm_gym/ALFWorld-v0", split="tiny", max_episode_steps=turns)
    observation, info = env.reset(seed=0)
    context, contexts = Context.from_reset(observation, info), []
    for _ in range(turns):
        contexts.append(context)
        (decision,) = agent.decide([context])
        context = context.propose(decision.action, decision.reason)
        observation, _, _, _, info = env.step(decision.action)
        context = context.advance(observation, info)
    env.close()
    return contexts


def test_loglik_reuses_the_previous_turn_and_stays_exact(lm) -> None:
    """Turn t+1's prompt starts with turn t's prompt and answer: their cached keys and values are read, not rerun,
    and every command's log-likelihood is still the full forward's."""
    agent = HFAgent(*lm, HFAgentConfig(mode="loglik"))
    contexts = play(agent, 4)
    for before, after in zip(contexts, contexts[1:], strict=False):
        (answer,) = agent._answer_ids([after.history[-1][1]])
        prompt = agent._prompt_ids(after)
        assert prompt[: len(agent._prompt_ids(before)) + len(answer)] == agent._prompt_ids(before) + answer
        assert agent.prefix_cache.match(prompt).length >= len(agent._prompt_ids(before)) + len(answer)
    fresh = HFAgent(*lm, HFAgentConfig(mode="loglik"))
    for context in contexts:  # one turn after the other: each one's prompt on the previous one's cache
        logliks = batch_logliks(fresh, [context])[0]
        assert logliks == pytest.approx(reference_logliks(fresh, context), abs=1e-4)
        fresh.decide([context])  # caches this prompt and the answer taken
    assert fresh.prefix_cache.tokens > 0


def test_generation_with_reuse_equals_full_prompts(lm) -> None:
    """Greedy answers and their log-likelihoods are the same whether the prompts come from the cache or not."""
    config = HFAgentConfig(max_new_tokens=16)
    off = HFAgent(*lm, dataclasses.replace(config, prompt_reuse=False))
    contexts = play(off, 3)
    on = HFAgent(*lm, config)
    for turn, context in enumerate(contexts):
        batch = [context, *states()[:2]]
        reused, full = on.decide(batch), off.decide(batch)
        assert [d.action for d in reused] == [d.action for d in full]
        assert [d.logprob for d in reused] == pytest.approx([d.logprob for d in full], abs=1e-4)
        if turn:
            prompt = on._prompt_ids(context)
            assert on.prefix_cache.match(prompt).length >= len(on._prompt_ids(contexts[turn - 1]))
    assert off.prefix_cache.tokens == 0


def test_models_that_cannot_reuse_get_full_forwards_and_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    _, tokenizer = tiny_llama("LlamaForCausalLM")
    sizes = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
    # Sliding-window layers (a window wider than the prompts: the same values as full attention).
    config = transformers.MistralConfig(vocab_size=len(tokenizer), num_key_value_heads=2, sliding_window=4096, **sizes)
    torch.manual_seed(0)
    model = transformers.MistralForCausalLM(config).eval()
    agent = HFAgent(model, tokenizer, HFAgentConfig(mode="loglik"))
    with caplog.at_level("WARNING"):
        logliks = batch_logliks(agent, states()[:2])
        agent.decide(states()[:2])
    assert [r.message for r in caplog.records if "no reuse" in r.message] == [
        "HFAgent reads every prompt in full, no reuse: MistralForCausalLM has sliding-window or other non-full "
        "attention layers."
    ]
    assert logliks[1] == pytest.approx(reference_logliks(agent, states()[1]), abs=1e-4)
    assert agent.prefix_cache.tokens == 0


def test_loglik_length_normalised_ranks_by_mean_token_logprob(lm) -> None:
    agent = HFAgent(*lm, HFAgentConfig(mode="loglik", length_normalise=True))
    state = states()[0]
    totals = reference_logliks(agent, state)
    means = [t / len(ids) for t, ids in zip(totals, agent._answer_ids(state.admissible_commands), strict=True)]
    (decision,) = agent.decide([state])
    assert decision.logprob == pytest.approx(max(means), abs=1e-3)


def test_loglik_sampling_follows_the_softmax_of_log_likelihoods(lm) -> None:
    agent = HFAgent(*lm, HFAgentConfig(mode="loglik", sample_temperature=50.0))
    state = states()[0]
    weights = torch.softmax(torch.tensor(reference_logliks(agent, state)) / 50.0, dim=0).tolist()
    agent.reset(seed=0)
    (samples,) = agent.sample([state], 400)
    frequencies = [sum(d.action == c for d in samples) / 400 for c in state.admissible_commands]
    assert frequencies == pytest.approx(weights, abs=0.08)


def test_answer_is_the_rendered_assistant_turn(lm) -> None:
    agent = HFAgent(*lm, HFAgentConfig(mode="loglik"))
    (answer,) = agent._answer_ids(["go to desk 1"])
    assert agent.tokenizer.decode(answer) == "ACTION: go to desk 1<|im_end|>\n"


def test_generation_stops_once_the_action_line_is_complete(lm) -> None:
    _, tokenizer = lm
    text = "REASON: The mug is there.\nACTION: take mug 1 from desk 1\nYou pick up the mug 1."
    tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
    stop = _ActionLineComplete(tokenizer, prompt_length=2)
    prefix = [0, 0]
    stopped_at = None
    for i in range(len(tokens)):
        done = stop(torch.tensor([prefix + tokens[: i + 1]]), torch.zeros(1, 1))
        if done.item() and stopped_at is None:
            stopped_at = i + 1
    assert tokenizer.decode(tokens[:stopped_at]).endswith("ACTION: take mug 1 from desk 1\n")
    assert stop.answer_length(0, tokens, eos_ids=[2]) == stopped_at
    assert stop.answer_length(1, tokens[:3] + [2, 2], eos_ids=[2]) == 4  # an eos ends the answer, itself included


def test_contexts_without_commands_and_bad_config_raise(lm) -> None:
    agent = HFAgent(*lm)
    with pytest.raises(ValueError, match="has none"):
        agent.decide([Context(task="t", observation="o")])
    with pytest.raises(ValueError, match="at least 1"):
        agent.sample(states(), 0)
    with pytest.raises(TypeError, match="Context"):
        agent.decide(["look"])  # type: ignore[list-item]
    for bad, match in [
        ({"mode": "beam"}, "mode"),
        ({"temperature": -1.0}, "temperature"),
        ({"sample_temperature": 0.0}, "sample_temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"prefix_cache_tokens": -1}, "prefix_cache_tokens"),
    ]:
        with pytest.raises(ValueError, match=match):
            HFAgentConfig(**bad)


def test_loads_a_saved_causal_lm_directory(lm, tmp_path: Path) -> None:
    model, tokenizer = lm
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    agent = HFAgent.from_pretrained(tmp_path, HFAgentConfig(mode="loglik"), device="cpu", dtype="fp32")
    assert agent.name == f"{tmp_path.name}-loglik" and agent.device.type == "cpu"
    assert agent.decide(states()[:1]) == HFAgent(model, tokenizer, HFAgentConfig(mode="loglik")).decide(states()[:1])
    with pytest.raises(FileNotFoundError, match="No model directory"):
        HFAgent.from_pretrained(tmp_path / "missing")


def test_eval_config_builds_the_hf_agent_and_policy(lm, tmp_path: Path) -> None:
    model, tokenizer = lm
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="needs `model`"):
        make_agent(EvalConfig(agent="hf"))
    agent = make_agent(EvalConfig(agent="hf", model=str(tmp_path), hf=HFAgentConfig(mode="loglik"), device="cpu"))
    assert isinstance(agent, HFAgent) and agent.config.mode == "loglik"
    hf = HFAgentConfig(max_new_tokens=8)
    best_of = make_agent(EvalConfig(agent="best-of-n", policy="hf", model=str(tmp_path), hf=hf, n=3, device="cpu"))
    assert isinstance(best_of.policy, HFAgent) and best_of.name.startswith(f"best-of-3({tmp_path.name}-generate")
    config = EvalConfig(split="tiny", num_games=2, max_episode_steps=2, num_envs=2)
    results = evaluate(best_of, config, progress=False)
    assert_played_admissibly(results, cap=2)


def test_plays_a_real_game(lm) -> None:
    env = gym.make("prm_gym/ALFWorld-v0", split="tiny", max_episode_steps=4)
    agent = HFAgent(*lm, HFAgentConfig(max_new_tokens=16))
    observation, info = env.reset(seed=0)
    agent.reset(seed=0)
    done = False
    while not done:
        action = agent.act(observation, info)
        assert action in info["admissible_commands"]
        observation, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    assert len(agent.context.history) == 3


@pytest.mark.skipif(not SHARED_GGUF.is_file(), reason=f"no shared GGUF model at {SHARED_GGUF}")
@pytest.mark.parametrize("mode", ["generate", "loglik"])
def test_shared_smollm2_plays_tiny_games(mode: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = tmp_path_factory.getbasetemp() / "smollm2-cache"  # converted once per test process
    agent = HFAgent.from_pretrained(
        SHARED_GGUF, HFAgentConfig(mode=mode, max_new_tokens=32), device="cpu", dtype="bf16", cache_dir=cache
    )
    config = EvalConfig(split="tiny", num_games=2, max_episode_steps=3, num_envs=2)
    results = evaluate(agent, config, progress=False)
    assert_played_admissibly(results, cap=3)


@pytest.mark.skipif(not SHARED_GGUF.is_file(), reason=f"no shared GGUF model at {SHARED_GGUF}")
def test_shared_smollm2_reuse_equals_full_forwards_in_float32(tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = tmp_path_factory.getbasetemp() / "smollm2-cache"  # converted once per test process
    agent = HFAgent.from_pretrained(
        SHARED_GGUF, HFAgentConfig(mode="loglik"), device="cpu", dtype="fp32", cache_dir=cache
    )
    expected = [reference_logliks(agent, state) for state in states()]
    # 30 layers over ~1k-token prompts in float32: cached and full forwards differ by up to ~1.6e-4 on an AVX2-only
    # CPU (below 1e-4 with AVX-512), while a wrong position or mask moves a log-likelihood by whole nats.
    close = {"abs": 5e-4}
    for state, expected_row in zip(states(), expected, strict=True):  # turn after turn, on the previous one's cache
        assert batch_logliks(agent, [state])[0] == pytest.approx(expected_row, **close)
        agent.decide([state])
    assert agent.prefix_cache.match(agent._prompt_ids(states()[2])).length > len(agent._prompt_ids(states()[0]))
    agent.prefix_cache.clear()
    for row, expected_row in zip(batch_logliks(agent, states()), expected, strict=True):  # one batch, no cache
        assert row == pytest.approx(expected_row, **close)


def test_answers_as_a_trie_score_as_full_forwards_and_hand_on_their_keys(lm) -> None:
    """Answers that start alike share trie nodes (the same answer twice, one the start of another): each one's
    log-likelihood is still its full forward's, with or without a cached prefix, and the keys and values handed on
    for the answer taken are those of a forward of prompt + answer."""
    from prm_gym.agents.prompt_reuse import PromptRow, full_answer_logprobs, score_answers
    from prm_gym.prm.token_trie import TokenTrie

    model, _ = lm
    prompts = [[5, 9, 14, 3, 8, 21], [40, 2, 17]]
    answers = [[[7, 1, 2], [7, 1, 3], [7, 1], [7, 1, 2], [8]], [[30, 31], [30, 32, 33]]]
    trie = TokenTrie()
    assert [len(trie.add(answer)) for answer in answers[0]] == [3, 3, 2, 3, 1] and len(trie) == 5  # of 12 tokens
    with torch.inference_mode():
        expected = full_answer_logprobs(model, prompts, answers, max_batch_tokens=4096)
        fresh = score_answers(model, [PromptRow(p) for p in prompts], answers, max_batch_tokens=4096)
        taken = [p + a[1] for p, a in zip(prompts, answers, strict=True)]  # answer 1 taken: the next prompts
        rows = [PromptRow(t + [11, 12], cached=len(t), layers=s.prefix(1)) for t, s in zip(taken, fresh, strict=True)]
        cached = score_answers(model, rows, answers, max_batch_tokens=4096)
        again = full_answer_logprobs(model, [row.ids for row in rows], answers, max_batch_tokens=4096)
        full = model(input_ids=torch.tensor([taken[0]]), use_cache=True).past_key_values
    for got, want in [(fresh, expected), (cached, again)]:
        for scored, row in zip(got, want, strict=True):
            assert scored.logprobs == pytest.approx(row, abs=1e-4)
    (keys, values), reference = fresh[0].prefix(1)[0], full.layers[0]
    assert torch.allclose(keys, reference.keys, atol=1e-5) and torch.allclose(values, reference.values, atol=1e-5)
