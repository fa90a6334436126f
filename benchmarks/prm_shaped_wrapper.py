"""Shaped process-reward wrapper with the SmolLM2 PRM, seconds per env-step: prefix sharing off, within, across turns.

    python benchmarks/prm_shaped_wrapper.py --episodes 2 --steps 30 --threads 1

``ProcessRewardWrapper(mode="shaped")`` scores every admissible command of each new state (its value V(s')) in
one ``ProcessRewardModel.score`` call per env-step. Each of ``--episodes`` evenly spaced games of a split
(valid_unseen) is played for ``--steps`` seeded uniformly random actions (the same actions in every mode), once per
mode, the modes' order rotating from episode to episode so that load drifts hit all of them:

- ``off``: full forwards of every context (``shared_prefix=False``);
- ``within``: the candidates of a state share one forward of their common prefix (``prefix_cache_tokens=0``);
- ``cross``: and that prefix starts from the previous turn's, kept in the prefix cache (the default).

A step's time is the wrapped env's ``step`` call: the env itself, rendering and tokenizing the contexts, and the
model. Also printed: the unwrapped env's seconds per step with the same actions, the tokens the contexts hold
and the tokens the model runs per step (its backbone's inputs), the prefix cache's tokens and bytes at the end,
and the largest difference of the rewards and scores from ``off`` (bf16 rounding). The model is the shared
SmolLM2-135M-Instruct GGUF with a fresh score head (the cost does not depend on the weights), bf16 on the CPU.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from typing import Any

import gymnasium as gym
import torch
from common import SHARED_GGUF, machine
from prm_shared_prefix import load_prm

import prm_gym  # noqa: F401  (registers the environments)
from prm_gym.prm import ProcessRewardModel
from prm_gym.wrappers import ProcessRewardConfig, ProcessRewardWrapper

MODES = ("off", "within", "cross")


def play(env: gym.Env[Any, Any], game: int, steps: int, seed: int) -> tuple[list[float], list[tuple[float, ...]]]:
    """Play ``steps`` seeded random actions in ``game``; return each step's seconds and its reward/score/value."""
    rng = random.Random(seed + game)
    _, info = env.reset(seed=seed, options={"game": game})
    seconds, outcomes = [], []
    for _ in range(steps):
        action = rng.choice(list(info["admissible_commands"]))
        start = time.perf_counter()
        _, reward, terminated, truncated, info = env.step(action)
        seconds.append(time.perf_counter() - start)
        outcomes.append((float(reward), info.get("prm_score", 0.0), info.get("prm_value", 0.0)))
        if terminated or truncated:
            break
    return seconds, outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SHARED_GGUF), help="a .gguf file, a model directory or a hub id")
    parser.add_argument("--random-weights", action="store_true", help="build --model (a config dir) untrained")
    parser.add_argument("--split", default="valid_unseen")
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's; 1 resists a loaded machine)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before, started = os.getloadavg()[0], time.strftime("%H:%M", time.gmtime())

    base = load_prm(args)
    prms = {
        "off": ProcessRewardModel(base.model, base.tokenizer, shared_prefix=False),
        "within": ProcessRewardModel(base.model, base.tokenizer, prefix_cache_tokens=0),
        "cross": base,
    }
    computed = [0]

    def count(module: Any, positional: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Add the real tokens of a backbone forward (a full forward's padding left out)."""
        mask = kwargs.get("attention_mask")
        ids = kwargs["input_ids"] if "input_ids" in kwargs else positional[0]
        computed[0] += int(mask.sum()) if mask is not None and mask.dim() == 2 else ids.numel()

    base.model.model.register_forward_pre_hook(count, with_kwargs=True)
    env = gym.make("prm_gym/ALFWorld-v0", split=args.split, shuffle=False, max_episode_steps=args.steps)
    games = len(env.unwrapped.game_files)  # type: ignore[attr-defined]
    chosen = [int(i * games / args.episodes) for i in range(args.episodes)]
    warm = ProcessRewardWrapper(env, prms["within"], ProcessRewardConfig(mode="shaped"))
    play(warm, chosen[0], 1, args.seed)

    seconds: dict[str, list[float]] = {mode: [] for mode in ("env", *MODES)}
    tokens: dict[str, int] = dict.fromkeys(MODES, 0)
    outcomes: dict[str, list[tuple[float, ...]]] = {mode: [] for mode in MODES}
    counting = {mode: _Counting(prms[mode]) for mode in MODES}
    for episode, game in enumerate(chosen):
        seconds["env"] += play(env, game, args.steps, args.seed)[0]
        order = MODES[episode % 3 :] + MODES[: episode % 3]
        for mode in order:
            wrapped = ProcessRewardWrapper(env, counting[mode], ProcessRewardConfig(mode="shaped"))
            computed[0] = 0
            took, got = play(wrapped, game, args.steps, args.seed)
            seconds[mode] += took
            outcomes[mode] += got
            tokens[mode] += computed[0]
    env.close()

    steps = len(seconds["off"])
    cache = prms["cross"].prefix_cache
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {machine()} (after the runs; {load_before:.2f} before, started {started} UTC)")
    print(
        f"torch threads {torch.get_num_threads()}; model {os.path.basename(args.model)} ({args.dtype}, {base.device})"
    )
    print(
        f"episodes: games {chosen} of {args.split}, {steps} env-steps in all (and the resets), "
        f"{counting['off'].contexts / steps:.1f} contexts scored per step; "
        f"env alone {1000 * statistics.mean(seconds['env']):.2f} ms/step"
    )
    print(f"prefix cache at the end (cross): {len(cache)} entries, {cache.tokens} tokens, {cache.nbytes / 1e6:.0f} MB")
    for mode in ("within", "cross"):
        largest = max(
            abs(a - b) for x, y in zip(outcomes[mode], outcomes["off"], strict=True) for a, b in zip(x, y, strict=True)
        )
        print(f"largest |reward, score or value difference| {mode} vs off ({args.dtype}): {largest:.2e}")
    print()
    print("| sharing | s/env-step | speed-up vs off | model tokens run/step (off: the contexts' tokens) |")
    print("|---|---:|---:|---:|")
    for mode in MODES:
        mean = statistics.mean(seconds[mode])
        print(f"| {mode} | {mean:.3f} | {statistics.mean(seconds['off']) / mean:.1f}x | {tokens[mode] / steps:.0f} |")


class _Counting:
    """The PRM, counting the contexts it is asked to score."""

    def __init__(self, prm: ProcessRewardModel) -> None:
        self.prm, self.contexts = prm, 0

    def score(self, contexts: list[Any]) -> list[float]:
        self.contexts += len(contexts)
        return self.prm.score(contexts)


if __name__ == "__main__":
    main()
