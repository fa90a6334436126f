"""Milliseconds per context of `encode_contexts` (render, fit the token budget, tokenize) on real game states.

    python benchmarks/encode_contexts.py    # 4 random valid_unseen episodes; SmolLM2 tokenizer; budgets 2048, 1024
"""

from __future__ import annotations

import random
import time

import gymnasium as gym
from common import SHARED_GGUF, machine
from transformers import AutoTokenizer

import prm_gym  # noqa: F401
from prm_gym.prm import Context, PromptConfig
from prm_gym.prm.prompt import encode_contexts


def main() -> None:
    print(f"machine: {machine()}")
    tokenizer = AutoTokenizer.from_pretrained(SHARED_GGUF.parent / "tokenizer")
    env, rng, contexts = gym.make("prm_gym/ALFWorld-v0", split="valid_unseen"), random.Random(0), []
    for seed in range(4):
        observation, info = env.reset(seed=seed)
        context = Context.from_reset(observation, info)
        for _ in range(30):
            context = context.propose(rng.choice(context.admissible_commands))
            contexts.append(context)
            observation, _, terminated, truncated, info = env.step(context.action)
            if terminated or truncated:
                break
            context = context.advance(observation, info)
    for budget in (2048, 1024):
        start = time.perf_counter()
        encode_contexts(contexts, tokenizer, PromptConfig(max_prompt_tokens=budget))
        seconds = time.perf_counter() - start
        print(f"budget {budget}: {len(contexts)} contexts, {1000 * seconds / len(contexts):.2f} ms per context")


if __name__ == "__main__":
    main()
