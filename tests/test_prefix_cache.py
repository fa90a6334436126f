"""The prefix cache across ``score`` calls gives the full forwards' scores, turn after turn of real episodes.

Tiny random Llama (float32, 1e-4): whole episodes with every admissible command scored per turn, a token budget
that drops old turns, LoRA adapters (switched off, weights changed), a small cap that evicts (tokens and bytes
held checked), the shaped vector wrapper; the shared SmolLM2 for a few turns; bf16 within 2e-2.
"""

from __future__ import annotations

import random

import gymnasium as gym
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from conftest import SHARED_GGUF, SHARED_TOKENIZER, tiny_llama  # noqa: E402

import prm_gym  # noqa: E402, F401  (registers the environments)
from prm_gym.prm import Context, LoraSettings, ProcessRewardModel  # noqa: E402
from prm_gym.prm.prefix_cache import PrefixCache  # noqa: E402
from prm_gym.prm.prompt import PromptConfig, render_text  # noqa: E402
from prm_gym.wrappers import ProcessRewardConfig, VectorProcessRewardWrapper  # noqa: E402

pytestmark = pytest.mark.skipif(not SHARED_TOKENIZER.is_dir(), reason=f"no shared tokenizer at {SHARED_TOKENIZER}")


def tiny_model(dtype=None):  # type: ignore[no-untyped-def]
    """A randomly initialised two-layer Llama classifier, sensitive to positions (peaked attention)."""
    return tiny_llama("LlamaForSequenceClassification", dtype=dtype, num_labels=1, initializer_range=0.2)


def episode(game: int, turns: int, seed: int = 0) -> list[Context]:
    """The states of seeded random play in a tiny game (its first ``turns`` states, fewer if it ends)."""
    env = gym.make("prm_gym/ALFWorld-v0", split="tiny")
    rng = random.Random(seed)
    observation, info = env.reset(seed=seed, options={"game": game})
    states = [Context.from_reset(observation, info)]
    while len(states) < turns:
        command = rng.choice(states[-1].admissible_commands)
        observation, _, terminated, _, info = env.step(command)
        if terminated:
            break
        states.append(states[-1].propose(command).advance(observation, info))
    env.close()
    return states


@pytest.fixture(scope="module")
def long_episode() -> list[Context]:
    return episode(game=0, turns=12)


def score_turns(prm: ProcessRewardModel, turns: list[list[Context]]) -> tuple[list[list[float]], list[int]]:
    """Score each turn's contexts in one call; return the scores and the tokens of every backbone forward."""
    runs: list[int] = []

    def count(module, args, kwargs):  # type: ignore[no-untyped-def]
        runs.append(kwargs["input_ids"].numel() if "input_ids" in kwargs else args[0].numel())

    model = prm.model.get_base_model() if hasattr(prm.model, "get_base_model") else prm.model
    handle = model.model.register_forward_pre_hook(count, with_kwargs=True)
    scores = []
    try:
        for contexts in turns:
            scores.append(prm.score(contexts))
            assert prm.prefix_cache.tokens <= prm.prefix_cache.max_tokens
    finally:
        handle.remove()
    return scores, runs


def turn_contexts(states: list[Context]) -> list[list[Context]]:
    """Each state's every admissible command proposed: one ``score`` call per turn, as the shaped wrapper makes."""
    return [[state.propose(command) for command in state.admissible_commands] for state in states]


def assert_cached_equals_full(
    cached: ProcessRewardModel, full: ProcessRewardModel, turns: list[list[Context]]
) -> list[int]:
    """Check the cached model's scores turn after turn against full forwards; return its forwards' tokens."""
    scores, runs = score_turns(cached, turns)
    for got, contexts in zip(scores, turns, strict=True):
        assert got == pytest.approx(full.score(contexts), abs=1e-4)
    return runs


def test_prefix_cache_matches_inside_entries_and_drops_extended_ones() -> None:
    cache = PrefixCache(max_tokens=100)
    keys = torch.arange(6.0).reshape(1, 1, 6, 1)
    cache.store([1, 2, 3, 4, 5, 6], [(keys, -keys)])
    hit = cache.match([1, 2, 3, 9, 9])
    assert hit.length == 3 and hit.layers[0][0].flatten().tolist() == [0.0, 1.0, 2.0]
    assert cache.match([1, 2, 3, 4, 5, 6, 7], limit=4).length == 4
    cache.store([1, 2, 3], [(keys, -keys)])  # a prefix of the entry: held already
    assert (len(cache), cache.tokens) == (1, 6)
    longer = [(torch.zeros(1, 1, 8, 1), torch.zeros(1, 1, 8, 1))]
    cache.store([1, 2, 3, 4, 5, 6, 7, 8], longer)  # extends the entry, which goes
    assert (len(cache), cache.tokens, cache.nbytes) == (1, 8, 2 * 8 * 4)


def test_prefix_cache_evicts_least_recently_used_within_its_cap() -> None:
    cache = PrefixCache(max_tokens=10)
    layer = [(torch.zeros(1, 1, 20, 2), torch.zeros(1, 1, 20, 2))]  # 20 tokens: a view of 4 is copied out
    cache.store([1, 2, 3, 4], layer)
    cache.store([5, 6, 7, 8], layer)
    assert cache.nbytes == 2 * 2 * 4 * 2 * 4  # two entries x keys and values x 4 tokens x 2 dims x 4 bytes
    cache.match([1, 2])  # the first entry is now the most recent
    cache.store([9, 10, 11], layer)
    assert (cache.tokens, cache.match([1]).length, cache.match([5]).length) == (7, 1, 0)
    cache.store(list(range(100, 111)), [(torch.zeros(1, 1, 11, 2), torch.zeros(1, 1, 11, 2))])  # over the cap
    assert cache.tokens == 7
    cache.max_tokens = 4  # [1, 2, 3, 4] was matched last: [9, 10, 11] goes
    assert (len(cache), cache.tokens, cache.match([9]).length) == (1, 4, 0)
    cache.max_tokens = 0
    assert (len(cache), cache.match([1, 2, 3]).length) == (0, 0)


@pytest.mark.parametrize(
    ("keys", "match"),
    [(torch.zeros(2, 1, 4, 2), "one row at a time"), (torch.zeros(1, 1, 2, 2), "at least 4 tokens")],
)
def test_prefix_cache_refuses_keys_that_do_not_fit(keys: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PrefixCache(max_tokens=10).store([1, 2, 3, 4], [(keys, keys)])
    with pytest.raises(ValueError, match="0 \\(off\\) or a positive"):
        PrefixCache(max_tokens=-1)


def test_episode_scored_turn_after_turn_equals_full_forwards(long_episode: list[Context]) -> None:
    model, tokenizer = tiny_model()
    cached = ProcessRewardModel(model, tokenizer)
    full = ProcessRewardModel(model, tokenizer, shared_prefix=False)
    within = ProcessRewardModel(model, tokenizer, prefix_cache_tokens=0)
    turns = turn_contexts(long_episode)
    runs_cached = assert_cached_equals_full(cached, full, turns)
    _, runs_within = score_turns(within, turns)  # each call reads its group's prefix in full
    assert len(cached.prefix_cache) == 1  # one growing entry: each turn's prefix extends the last one's
    # From the second turn on, the prefix forward runs the ~50 tokens a turn adds, not the ~300-900 of the render.
    assert sum(runs_cached) < 0.5 * sum(runs_within)


def test_token_budget_drops_old_turns_still_exact(long_episode: list[Context]) -> None:
    model, tokenizer = tiny_model()
    config = PromptConfig(max_prompt_tokens=420)
    cached = ProcessRewardModel(model, tokenizer, prompt_config=config)
    full = ProcessRewardModel(model, tokenizer, prompt_config=config, shared_prefix=False)
    renders = [render_text(s.propose(s.admissible_commands[0]), tokenizer, config) for s in long_episode]
    dropped = ["earlier turn" in text for text in renders]
    assert not dropped[0] and sum(dropped) >= 3  # the budget starts dropping turns along the episode
    assert_cached_equals_full(cached, full, turn_contexts(long_episode))
    assert len(cached.prefix_cache) >= 2  # renders after a drop no longer extend the earlier ones


def test_lone_contexts_reuse_the_previous_turn(long_episode: list[Context]) -> None:
    model, tokenizer = tiny_model()
    cached = ProcessRewardModel(model, tokenizer)
    full = ProcessRewardModel(model, tokenizer, shared_prefix=False)
    # One context per call, as the replace-mode wrapper scores the action taken: the next one extends it.
    taken = [state.propose(nxt.history[-1][1]) for state, nxt in zip(long_episode, long_episode[1:], strict=False)]
    runs = assert_cached_equals_full(cached, full, [[context] for context in taken])
    # Each context runs only the tokens after the previous one's last (read again: the head's position there).
    assert sum(runs) == len(cached.encode(taken[-1:])["input_ids"][0]) + len(taken) - 1


def test_lora_adapters_switched_off_and_weights_changed(long_episode: list[Context]) -> None:
    pytest.importorskip("peft")
    model, tokenizer = tiny_model()
    cached = ProcessRewardModel(model, tokenizer, lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    full = ProcessRewardModel(cached.model, tokenizer, shared_prefix=False)
    torch.manual_seed(1)
    for name, parameter in cached.model.named_parameters():
        if "lora_B" in name:  # zero at initialisation: the adapters would change nothing
            parameter.data.normal_(std=0.5)
    turns = turn_contexts(long_episode[:6])
    assert_cached_equals_full(cached, full, turns)
    with cached.model.disable_adapter():  # the cached keys and values were computed with the adapters
        without = cached.score(turns[-1])
        assert without == pytest.approx(full.score(turns[-1]), abs=1e-4)
    assert without != pytest.approx(cached.score(turns[-1]), abs=1e-3)
    with torch.no_grad():  # a training step changes the weights in place
        next(p for n, p in cached.model.named_parameters() if "lora_A" in n).add_(0.3)
    assert_cached_equals_full(cached, full, turns[-2:])


def test_small_cap_evicts_and_stays_exact() -> None:
    model, tokenizer = tiny_model()
    cached = ProcessRewardModel(model, tokenizer, prefix_cache_tokens=700)
    full = ProcessRewardModel(model, tokenizer, shared_prefix=False)
    games = [turn_contexts(episode(game, turns=6, seed=game)) for game in (0, 1, 2)]
    interleaved = [turn for turns in zip(*games, strict=False) for turn in turns]  # three episodes in parallel
    assert_cached_equals_full(cached, full, interleaved)
    cache = cached.prefix_cache
    per_token = 2 * 2 * 2 * 16 * 4  # layers x (keys, values) x kv heads x head dim x float32 bytes
    assert 0 < cache.tokens <= 700 and cache.nbytes == cache.tokens * per_token
    assert len(cache) < 3  # three episodes' renders do not fit: some were evicted


def test_shaped_vector_wrapper_rewards_unchanged() -> None:
    model, tokenizer = tiny_model()
    config = ProcessRewardConfig(mode="shaped")
    rewards = {}
    for name, prm in {
        "cached": ProcessRewardModel(model, tokenizer),
        "full": ProcessRewardModel(model, tokenizer, shared_prefix=False),
    }.items():
        envs = VectorProcessRewardWrapper(gym.make_vec("prm_gym/ALFWorld-v0", num_envs=2, split="tiny"), prm, config)
        _, infos = envs.reset(seed=0)
        rng, got = random.Random(0), []
        for _ in range(12):  # tiny games end within this: autoresets included
            actions = [rng.choice(list(commands)) for commands in infos["admissible_commands"]]
            _, reward, terminated, truncated, infos = envs.step(actions)
            got.append(reward)
        envs.close()
        rewards[name] = np.array(got)
    assert rewards["cached"] == pytest.approx(rewards["full"], abs=1e-4)


def test_bf16_close_to_full_forwards(long_episode: list[Context]) -> None:
    model, tokenizer = tiny_model(dtype=torch.bfloat16)
    cached = ProcessRewardModel(model, tokenizer)
    full = ProcessRewardModel(model, tokenizer, shared_prefix=False)
    for contexts in turn_contexts(long_episode):
        assert cached.score(contexts) == pytest.approx(full.score(contexts), abs=2e-2)


@pytest.mark.skipif(not SHARED_GGUF.is_file(), reason=f"no shared GGUF model at {SHARED_GGUF}")
def test_shared_smollm2_turns_equal_full_forwards_in_float32(
    long_episode: list[Context], tmp_path_factory: pytest.TempPathFactory
) -> None:
    cache = tmp_path_factory.getbasetemp() / "smollm2-cache"  # converted once per test process
    torch.manual_seed(0)  # the fresh score head
    cached = ProcessRewardModel.from_pretrained(SHARED_GGUF, device="cpu", dtype="fp32", cache_dir=cache)
    full = ProcessRewardModel(cached.model, cached.tokenizer, shared_prefix=False)
    states = long_episode[:4]
    # Four candidates a turn, the command played next among them: the next turn extends one of them.
    turns = [
        [state.propose(c) for c in {nxt.history[-1][1], *state.admissible_commands[:3]}]
        for state, nxt in zip(states, long_episode[1:], strict=False)
    ]
    runs = assert_cached_equals_full(cached, full, turns)
    assert max(runs[2:]) < 100  # the later turns' prefixes start from the earlier ones'
