"""HFAgent seconds per step over whole episodes, prompt reuse on vs off, loglik and generate, side by side.

    python benchmarks/hf_agent_reuse.py --games 3 --steps 30 --threads 1 --max-new-tokens 24

The first ``--games`` games of a split (valid_unseen) are played in one lockstep group (``num_envs`` = games:
one ``decide`` call per turn over every live game, as evaluation plays them), whole episodes of at most
``--steps`` steps, greedy, by :class:`~prm_gym.agents.HFAgent` with the shared SmolLM2-135M-Instruct GGUF (bf16
on the CPU by default), in each mode (``--modes``) and condition: ``on`` (``prompt_reuse``: each prompt read
once, from the end of the episode's cached previous prompt and answer; loglik answers packed after it) and
``off`` (full forwards: one per command in loglik mode; the whole prompt prefilled by ``generate``), one after
the other, on one loaded model, each after a two-step warm-up. Printed per run: seconds per env-step (the
run's wall time over the steps its episodes took), the steps, and, for ``on``, the same-turn actions that
differ from ``off``'s (bf16 rounding can flip a close call; the episodes then differ from there on).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from common import SHARED_GGUF, machine

import prm_gym  # noqa: F401  (registers the environments)
from prm_gym.agents import HFAgent, HFAgentConfig
from prm_gym.evaluation import EvalConfig, evaluate
from prm_gym.rollout import Episode


def play(agent: HFAgent, config: EvalConfig) -> tuple[float, list[Episode]]:
    """Return the wall seconds of playing the config's games with ``agent`` and the episodes."""
    start = time.perf_counter()
    episodes = evaluate(agent, config, progress=False)
    return time.perf_counter() - start, episodes


def differing_actions(episodes: list[Episode], reference: list[Episode]) -> int:
    """Return how many turns played in both runs took different actions."""
    return sum(
        a != b
        for mine, theirs in zip(episodes, reference, strict=True)
        for a, b in zip(mine.actions, theirs.actions, strict=False)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=3, help="games, played in one lockstep group")
    parser.add_argument("--steps", type=int, default=30, help="step cap per episode")
    parser.add_argument("--split", default="valid_unseen")
    parser.add_argument("--modes", nargs="+", default=["loglik", "generate"], choices=["loglik", "generate"])
    parser.add_argument("--conditions", nargs="+", default=["on", "off"], choices=["on", "off"])
    parser.add_argument("--max-new-tokens", type=int, default=24, help="generate mode's answer cap")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (others share the cores)")
    parser.add_argument("--model", default=str(SHARED_GGUF))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bf16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = HFAgent.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    print(f"machine: {machine()}; torch threads {torch.get_num_threads()}; {base.device}, {base.model.dtype}")
    config = EvalConfig(split=args.split, num_games=args.games, num_envs=args.games, max_episode_steps=args.steps,
                        game_selection="first")  # the games RESULTS.md reports
    warm_up = dataclasses.replace(config, num_games=1, num_envs=1, max_episode_steps=2)
    print(f"{args.games} games of {args.split}, cap {args.steps} steps, generate max_new_tokens {args.max_new_tokens}")
    print(f"{'mode':9} {'reuse':5} {'s/step':>7} {'steps':>5} {'won':>3} {'seconds':>8} {'actions != off':>14}")
    for mode in args.modes:
        runs: dict[str, tuple[float, list[Episode]]] = {}
        for condition in args.conditions:
            settings = HFAgentConfig(mode=mode, max_new_tokens=args.max_new_tokens, prompt_reuse=condition == "on")
            agent = HFAgent(base.model, base.tokenizer, settings, name=base.name)
            play(agent, warm_up)
            runs[condition] = play(agent, config)
        for condition, (seconds, episodes) in runs.items():
            steps = sum(len(episode.steps) for episode in episodes)
            won = sum(episode.won for episode in episodes)
            differ = str(differing_actions(episodes, runs["off"][1])) if condition == "on" and "off" in runs else "-"
            print(f"{mode:9} {condition:5} {seconds / steps:7.2f} {steps:5} {won:3} {seconds:8.1f} {differ:>14}")
    print(f"machine after: {machine()}")


if __name__ == "__main__":
    main()
