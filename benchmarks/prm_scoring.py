"""Process reward model scoring throughput (contexts/s, tokens/s), batched vs one context at a time.

    python benchmarks/prm_scoring.py --games 5 --candidates 4 --device auto

Contexts are real ALFWorld turns: the gold walkthroughs of the first ``--games`` games of a split are played,
and at every state the walkthrough's command plus ``--candidates - 1`` other admissible commands are proposed
(as Best-of-N scores them). The model is the shared SmolLM2-135M-Instruct GGUF, converted once into the
prm_gym cache, with a fresh score head (throughput does not depend on the head's training).
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import gymnasium as gym
import torch
from common import SHARED_GGUF, machine

import prm_gym  # noqa: F401
from prm_gym.prm import Context, ProcessRewardModel


def walkthrough_contexts(split: str, games: int, candidates: int, seed: int) -> list[Context]:
    env = gym.make("prm_gym/ALFWorld-v0", split=split, shuffle=False, privileged=("walkthrough",))
    rng = random.Random(seed)
    contexts = []
    for game in range(games):
        obs, info = env.reset(seed=seed, options={"game": game})
        state = Context.from_reset(obs, info)
        for command in info["walkthrough"]:
            others = [c for c in state.admissible_commands if c != command]
            proposals = [command, *rng.sample(others, min(candidates - 1, len(others)))]
            contexts += [state.propose(action) for action in proposals]
            obs, _, terminated, truncated, info = env.step(command)
            state = state.propose(command).advance(obs, info)
            if terminated or truncated:
                break
    env.close()
    return contexts


def timed(prm: ProcessRewardModel, contexts: list[Context], batched: bool) -> float:
    start = time.perf_counter()
    if batched:
        prm.score(contexts)
    else:
        for context in contexts:
            prm.score([context])
    if prm.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SHARED_GGUF), help="a .gguf file, a model directory or a hub id")
    parser.add_argument("--split", default="valid_unseen")
    parser.add_argument("--games", type=int, default=5)
    parser.add_argument("--candidates", type=int, default=4, help="proposed actions per state")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max-batch-tokens", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    contexts = walkthrough_contexts(args.split, args.games, args.candidates, args.seed)
    start = time.perf_counter()
    prm = ProcessRewardModel.from_pretrained(
        args.model, device=args.device, dtype=args.dtype, max_batch_tokens=args.max_batch_tokens
    )
    load_s = time.perf_counter() - start
    lengths = prm.encode(contexts)["attention_mask"].sum(-1).tolist()
    tokens = sum(lengths)
    prm.score(contexts[:2])  # warm-up: first-call allocations and kernel selection
    rows = [
        (f"batched (max_batch_tokens={args.max_batch_tokens})", timed(prm, contexts, batched=True)),
        ("one at a time", timed(prm, contexts, batched=False)),
    ]

    print(f"machine: {machine()}")
    print(f"model: {Path(args.model).name} on {prm.device}, {prm.model.dtype}; loaded in {load_s:.1f} s")
    print(
        f"contexts: {len(contexts)} from the walkthroughs of {args.games} {args.split} games, {args.candidates} "
        f"proposals per state; tokens per context mean {tokens / len(contexts):.0f}, max {max(lengths)}"
    )
    print()
    print("| mode | contexts | tokens | seconds | contexts/s | tokens/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode, seconds in rows:
        print(
            f"| {mode} | {len(contexts)} | {tokens} | {seconds:.1f} | {len(contexts) / seconds:.1f} "
            f"| {tokens / seconds:.0f} |"
        )


if __name__ == "__main__":
    main()
