"""Best-of-N cost per turn vs N: one ``BestOfNAgent.decide`` per real ALFWorld state, N = 1, 2, 4, 8, 16.

    python benchmarks/best_of_n_cost.py --games 12 --states 60
    python benchmarks/best_of_n_cost.py --prm --games 12 --states 6

States are the turns along the gold walkthroughs of ``--games`` seeded games of a split (valid_unseen by
default; its first games in path order are all of one task type), ``--states`` of them evenly spaced (early
and late turns alike: the history, and with it a PRM's prompt and a rollout's remaining steps, change along an
episode). At each state, for each N, the agent ``BestOfNAgent(RandomAgent, reward_model, N)`` decides once,
reseeded with the state's index so every run sees the same candidates. The reward model is a
``MonteCarloRewardModel`` (``--rollouts`` uniformly random rollouts per candidate, fast backend, 30-step cap),
fresh for each N and fed the states in episode order as an episode would (its snapshot cache then spares
replaying histories); with ``--prm``, the shared SmolLM2-135M-Instruct GGUF as a ``ProcessRewardModel`` (bf16
on CPU by default, fresh score head: cost does not depend on training), after one warm-up call. Times are
wall-clock (``time.perf_counter``), so report the load average with them.

Per N: seconds per turn (median, mean), distinct candidates scored per turn (the agent deduplicates its N
samples), seconds of ``score`` per scored candidate, and the ``score`` call's share of the turn.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import gymnasium as gym
from common import SHARED_GGUF, machine

import prm_gym  # noqa: F401  (registers the environments)
from prm_gym.agents import BestOfNAgent, RandomAgent
from prm_gym.prm import Context
from prm_gym.prm.base import RewardModel
from prm_gym.rollout.monte_carlo import MonteCarloConfig, MonteCarloRewardModel

#: The N of Best-of-N measured.
NS = (1, 2, 4, 8, 16)


@dataclass
class TimedRewardModel:
    """Wraps a reward model to count the contexts it scores and the seconds its ``score`` calls take."""

    model: RewardModel
    seconds: list[float] = field(default_factory=list)
    scored: list[int] = field(default_factory=list)

    def score(self, contexts: Sequence[Context]) -> list[float]:
        """Score through the wrapped model, recording the call's duration and batch size."""
        start = time.perf_counter()
        scores = self.model.score(contexts)
        self.seconds.append(time.perf_counter() - start)
        self.scored.append(len(contexts))
        return scores


def walkthrough_states(split: str, games: int, states: int, max_episode_steps: int, seed: int) -> list[Context]:
    """Return ``states`` evenly spaced states along the walkthroughs of ``games`` seeded games, in order."""
    env = gym.make("prm_gym/ALFWorld-v0", split=split, shuffle=False, max_episode_steps=max_episode_steps,
                   privileged=("walkthrough",))
    num_games = len(env.unwrapped.game_files)  # type: ignore[attr-defined]
    found = []
    for game in sorted(random.Random(seed).sample(range(num_games), min(games, num_games))):
        observation, info = env.reset(options={"game": game})
        context = Context.from_reset(observation, info)
        for command in info["walkthrough"]:
            found.append(context)
            observation, _, terminated, truncated, info = env.step(command)
            if terminated or truncated:
                break
            context = context.propose(command).advance(observation, info)
    env.close()
    step = len(found) / min(states, len(found))
    return [found[int(i * step)] for i in range(min(states, len(found)))]


def measure(agent: BestOfNAgent, states: Sequence[Context], seed: int) -> list[float]:
    """Time one ``decide`` per state (the agent reseeded with the state's index); return the seconds per turn."""
    turns = []
    for index, state in enumerate(states):
        agent.reset(seed=seed + index)
        start = time.perf_counter()
        agent.decide([state])
        turns.append(time.perf_counter() - start)
    return turns


def row(n: int, turns: list[float], timed: TimedRewardModel) -> str:
    """Return the Markdown table row of one N."""
    scored, score_s = sum(timed.scored), sum(timed.seconds)
    return (
        f"| {n} | {len(turns)} | {statistics.median(turns):.3f} | {statistics.mean(turns):.3f} "
        f"| {scored / len(turns):.1f} | {score_s / scored:.4f} | {100 * score_s / sum(turns):.1f} |"
    )


def monte_carlo(args: argparse.Namespace) -> MonteCarloRewardModel:
    """Return a fresh Monte-Carlo estimator (empty snapshot cache) on the fast backend."""
    config = MonteCarloConfig(num_rollouts=args.rollouts, max_episode_steps=args.max_episode_steps, seed=args.seed,
                              env_kwargs={"backend": "fast"})
    return MonteCarloRewardModel(config)


def load_prm(device: str, dtype: str) -> RewardModel:
    """Load the shared SmolLM2-135M-Instruct GGUF as a process reward model (converted once, then cached)."""

    from prm_gym.prm import ProcessRewardModel

    return ProcessRewardModel.from_pretrained(str(SHARED_GGUF), device=device, dtype=dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="valid_unseen")
    parser.add_argument("--games", type=int, default=12, help="seeded games whose walkthrough states are used")
    parser.add_argument("--states", type=int, default=60, help="states kept, evenly spaced")
    parser.add_argument("--rollouts", type=int, default=16, help="Monte-Carlo rollouts per candidate")
    parser.add_argument("--max-episode-steps", type=int, default=30)
    parser.add_argument("--prm", action="store_true", help="score with the SmolLM2 PRM instead of Monte-Carlo")
    parser.add_argument("--device", default="cpu", help="--prm: where the PRM runs")
    parser.add_argument("--dtype", default="bfloat16", help="--prm: the PRM's weight precision")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    states = walkthrough_states(args.split, args.games, args.states, args.max_episode_steps, args.seed)
    prm = load_prm(args.device, args.dtype) if args.prm else None
    if prm is not None:
        prm.score([states[0].propose(states[0].admissible_commands[0])])  # warm-up: first-call allocations
    load_before = os.getloadavg()
    rows = []
    for n in NS:
        timed = TimedRewardModel(prm if prm is not None else monte_carlo(args))
        turns = measure(BestOfNAgent(RandomAgent(), timed, n=n), states, args.seed)
        rows.append(row(n, turns, timed))

    scorer = (
        f"SmolLM2-135M-Instruct PRM ({args.dtype}, {args.device})" if args.prm
        else f"Monte-Carlo, {args.rollouts} random rollouts per candidate (fast backend)"
    )
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {machine()} (after the runs; {load_before[0]:.2f} before them)")
    print(
        f"states: {len(states)} along the walkthroughs of {args.games} seeded {args.split} games "
        f"(mean {statistics.mean(len(s.admissible_commands) for s in states):.1f} admissible commands); "
        f"reward model: {scorer}"
    )
    print()
    print("| N | turns | s/turn median | s/turn mean | candidates scored/turn | score s/candidate | score share % |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
