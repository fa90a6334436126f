"""Shared-prefix scoring gives the full forwards' scores: tiny random Llama and Qwen2, LoRA, the shared SmolLM2.

Within one ``score`` call: the prefix cache across calls is off here (tests/test_prefix_cache.py tests it).
"""

from __future__ import annotations

import logging

import gymnasium as gym
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import SHARED_GGUF, SHARED_TOKENIZER, tiny_llama  # noqa: E402

import prm_gym  # noqa: E402, F401  (registers the environments)
from prm_gym.prm import Context, LoraSettings, ProcessRewardModel  # noqa: E402
from prm_gym.prm import shared_prefix as sharing  # noqa: E402
from prm_gym.prm.model import head_logits  # noqa: E402

pytestmark = pytest.mark.skipif(not SHARED_TOKENIZER.is_dir(), reason=f"no shared tokenizer at {SHARED_TOKENIZER}")

#: Random weights this large make attention peaked, so that a key read at a wrong position changes the scores
#: (transformers' default 0.02 spreads it almost evenly: a position off by one would pass unnoticed).
INITIALIZER_RANGE = 0.2


def tiny_prm(dtype=None, prefix_cache_tokens=0, **kwargs) -> ProcessRewardModel:  # type: ignore[no-untyped-def]
    """A randomly initialised two-layer Llama PRM, sensitive to positions, with the shared SmolLM2 tokenizer."""
    model, tokenizer = tiny_llama(
        "LlamaForSequenceClassification", dtype=dtype, num_labels=1, initializer_range=INITIALIZER_RANGE
    )
    return ProcessRewardModel(model, tokenizer, prefix_cache_tokens=prefix_cache_tokens, **kwargs)


@pytest.fixture(scope="module")
def states() -> list[Context]:
    """The states along the walkthroughs of two tiny games (a long history by the last ones)."""
    env = gym.make("prm_gym/ALFWorld-v0", split="tiny", privileged=("walkthrough",))
    found = []
    for game in (0, 1):
        observation, info = env.reset(options={"game": game})
        state = Context.from_reset(observation, info)
        for command in info["walkthrough"]:
            found.append(state)
            observation, _, _, _, info = env.step(command)
            state = state.propose(command).advance(observation, info)
    env.close()
    return found


def mixed_contexts(states: list[Context]) -> list[Context]:
    """Every candidate of the last state of each game, two of an earlier state, and contexts sharing nothing."""
    last_of_game = [s for i, s in enumerate(states) if i + 1 == len(states) or states[i + 1].history == ()]
    contexts = [s.propose(c) for s in last_of_game for c in s.admissible_commands]
    contexts += [states[1].propose(c) for c in states[1].admissible_commands[:2]]
    contexts += [states[0].propose("look"), Context(task="x", observation="y").propose("look")]
    return contexts[::2] + contexts[1::2]  # groups interleaved in the input


def scores_both_ways(prm: ProcessRewardModel, contexts: list[Context]) -> tuple[list[float], list[float]]:
    """Return the scores with shared prefixes, then with full forwards."""
    prm.shared_prefix = True
    shared = prm.score(contexts)
    prm.shared_prefix = False
    full = prm.score(contexts)
    prm.shared_prefix = True
    return shared, full


@pytest.fixture()
def group_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every group scored on a shared prefix."""
    calls: list[int] = []
    original = sharing.group_logits

    def spy(model, token_ids, group, max_batch_tokens, cache=None):  # type: ignore[no-untyped-def]
        calls.append(len(group.rows))
        return original(model, token_ids, group, max_batch_tokens, cache)

    monkeypatch.setattr(sharing, "group_logits", spy)
    return calls


def test_tiny_llama_scores_equal_full_forwards(states: list[Context], group_calls: list[int]) -> None:
    prm = tiny_prm()
    contexts = mixed_contexts(states)
    shared, full = scores_both_ways(prm, contexts)
    assert shared == pytest.approx(full, abs=1e-4)
    # Groups of several states, some rows alone (renders are append-only: the second state's candidates share the
    # first game's last state's prefix up to their answers, and join its group).
    assert len(group_calls) >= 2 and sum(group_calls) < len(contexts)
    assert len(set(full)) > len(contexts) // 2  # the scores differ: rows swapped would be caught


def test_suffixes_split_over_several_packs(states: list[Context], group_calls: list[int]) -> None:
    contexts = [states[-1].propose(c) for c in states[-1].admissible_commands]
    prm = tiny_prm(max_batch_tokens=24)  # a few suffixes per pack; the prefix, longer, still runs (alone)
    backbone_calls = []
    prm.model.model.register_forward_hook(lambda module, args, output: backbone_calls.append(1))
    shared, full = scores_both_ways(prm, contexts)
    assert shared == pytest.approx(full, abs=1e-4)
    assert group_calls == [len(contexts)]
    assert 1 + 3 <= backbone_calls.count(1) - len(contexts)  # the prefix and 3+ packs (then one full row each)


def test_qwen2_scores_equal_full_forwards(states: list[Context]) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(SHARED_TOKENIZER)
    config = transformers.Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_labels=1, pad_token_id=tokenizer.pad_token_id, initializer_range=INITIALIZER_RANGE,
    )
    torch.manual_seed(0)
    prm = ProcessRewardModel(
        transformers.Qwen2ForSequenceClassification(config).eval(), tokenizer, prefix_cache_tokens=0
    )
    assert sharing.unsupported(prm.model) is None
    shared, full = scores_both_ways(prm, mixed_contexts(states))
    assert shared == pytest.approx(full, abs=1e-4)


def test_lora_adapters_are_applied_on_the_shared_path(states: list[Context], group_calls: list[int]) -> None:
    pytest.importorskip("peft")
    prm = tiny_prm(lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    torch.manual_seed(1)
    for name, parameter in prm.model.named_parameters():
        if "lora_B" in name:  # zero at initialisation: the adapters would change nothing
            parameter.data.normal_(std=0.5)
    contexts = [states[-1].propose(c) for c in states[-1].admissible_commands]
    shared, full = scores_both_ways(prm, contexts)
    assert group_calls
    assert shared == pytest.approx(full, abs=1e-4)
    with prm.model.disable_adapter():
        assert prm.score(contexts) != pytest.approx(full, abs=1e-3)


def test_bf16_scores_close_to_full_forwards(states: list[Context]) -> None:
    shared, full = scores_both_ways(tiny_prm(dtype=torch.bfloat16), mixed_contexts(states))
    assert shared == pytest.approx(full, abs=2e-2)


def test_head_read_at_last_token_that_is_not_padding() -> None:
    prm = tiny_prm()
    pad = prm.tokenizer.pad_token_id
    prefix = prm.tokenizer("You are in the middle of a room. " * 30)["input_ids"]
    rows = [prefix + [11, 12, pad], prefix + [13], prefix + [13], prefix[:-1] + [pad, 14], prefix + [pad]]
    groups, alone = sharing.plan_groups(rows, pad)
    assert alone == [] and [sorted(g.rows) for g in groups] == [[0, 1, 2, 3, 4]]
    with torch.inference_mode():
        shared = sharing.group_logits(prm.model, rows, groups[0], max_batch_tokens=8192)
        full = [head_logits(prm.model, prm._pad([row])).item() for row in rows]
    assert shared == pytest.approx([full[r] for r in groups[0].rows], abs=1e-4)


def test_switched_off_runs_full_forwards_only(states: list[Context], group_calls: list[int]) -> None:
    prm = tiny_prm(shared_prefix=False)
    prm.score([states[-1].propose(c) for c in states[-1].admissible_commands])
    assert group_calls == []


def test_single_context_and_short_prefixes_run_full_forwards(group_calls: list[int]) -> None:
    prm = tiny_prm()
    state = Context(task="look", observation="You are in a room.", admissible_commands=("look", "inventory"))
    prm.score([state.propose("look")])
    prm.score([state.propose("look"), state.propose("inventory")])  # ~100 shared tokens: the system prompt
    assert group_calls == []


def test_encoder_falls_back_saying_why_once(caplog: pytest.LogCaptureFixture, group_calls: list[int]) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(SHARED_TOKENIZER)
    config = transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        num_labels=1,
    )
    prm = ProcessRewardModel(transformers.BertForSequenceClassification(config).eval(), tokenizer)
    state = Context(task="look", observation="You are in a room. " * 40, admissible_commands=("look", "inventory"))
    contexts = [state.propose("look"), state.propose("inventory")]
    with caplog.at_level(logging.WARNING, logger="prm_gym.prm.model"):
        first = prm.score(contexts)
        assert prm.score(contexts) == pytest.approx(first, abs=1e-6)
    messages = [r.getMessage() for r in caplog.records if "no shared prefixes" in r.getMessage()]
    assert len(messages) == 1 and "BertForSequenceClassification" in messages[0]
    assert group_calls == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_scores_equal_full_forwards(states: list[Context]) -> None:
    prm = tiny_prm()
    prm.model.to("cuda")
    shared, full = scores_both_ways(prm, mixed_contexts(states))
    assert shared == pytest.approx(full, abs=1e-4)


@pytest.mark.skipif(not SHARED_GGUF.is_file(), reason=f"no shared GGUF model at {SHARED_GGUF}")
def test_shared_smollm2_scores_equal_full_forwards_in_float32(
    states: list[Context], tmp_path_factory: pytest.TempPathFactory, group_calls: list[int]
) -> None:
    cache = tmp_path_factory.getbasetemp() / "smollm2-cache"  # converted once per test process
    torch.manual_seed(0)  # the fresh score head
    prm = ProcessRewardModel.from_pretrained(
        SHARED_GGUF, device="cpu", dtype="fp32", cache_dir=cache, prefix_cache_tokens=0
    )
    last = states[-1]
    contexts = [last.propose(c) for c in last.admissible_commands[:4]]
    contexts += [states[1].propose(c) for c in states[1].admissible_commands[:2]]
    contexts += [states[0].propose("look"), Context(task="x", observation="y").propose("look")]
    shared, full = scores_both_ways(prm, contexts)
    assert shared == pytest.approx(full, abs=1e-4)
    assert len(group_calls) == 2 and sum(group_calls) >= 6  # the last state's candidates, the second state's
