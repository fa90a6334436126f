"""Reset and step latency of ``prm_gym/ALFWorld-v0`` on real games (median and p90, in milliseconds).

    python benchmarks/env_latency.py --split valid_unseen --games 40 --steps 30
    python benchmarks/env_latency.py --split valid_unseen --games 40 --steps 30 --backend textworld

``--backend`` picks the engine (``fast``, the default, or the reference ``textworld``); the output names the
one used. Reset is measured two ways: on a game not loaded before (parse the game + start the engine) and
again on the same game (engine reset only). Steps are random admissible commands, one game after another.
Times are wall-clock (``time.perf_counter``). benchmarks/fast_engine_speed.py compares both engines on the
same command sequences.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
from common import machine

import prm_gym  # noqa: F401
from prm_gym.agents import RandomAgent
from prm_gym.envs.alfworld.env import BACKENDS, DEFAULT_BACKEND


def percentiles(samples: list[float]) -> str:
    ms = np.array(samples) * 1000
    return f"{np.median(ms):8.1f} {np.percentile(ms, 90):8.1f} {len(ms):6d}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="valid_unseen")
    parser.add_argument("--games", type=int, default=40)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND, help="engine (default: %(default)s)")
    args = parser.parse_args()

    env = gym.make("prm_gym/ALFWorld-v0", split=args.split, max_episode_steps=args.steps, backend=args.backend)
    agent = RandomAgent(seed=args.seed)
    new_game, same_game, steps = [], [], []
    for episode in range(args.games):
        start = time.perf_counter()
        obs, info = env.reset(seed=args.seed if episode == 0 else None)
        new_game.append(time.perf_counter() - start)
        start = time.perf_counter()
        obs, info = env.reset(options={"game": info["game_file"]})
        same_game.append(time.perf_counter() - start)
        done = False
        while not done:
            command = agent.act(obs, info)
            start = time.perf_counter()
            obs, _, terminated, truncated, info = env.step(command)
            steps.append(time.perf_counter() - start)
            done = terminated or truncated

    print(f"machine: {machine()}")
    backend = env.unwrapped.backend
    print(f"prm_gym/ALFWorld-v0 ({backend} engine), split {args.split}, {args.games} games, random admissible commands")
    print(f"{'':<22}{'median':>8} {'p90':>8} {'n':>6}   (ms)")
    print(f"{'reset, new game':<22}{percentiles(new_game)}")
    print(f"{'reset, same game':<22}{percentiles(same_game)}")
    print(f"{'step':<22}{percentiles(steps)}")
    print(f"steps per second: {len(steps) / sum(steps):.1f}")


if __name__ == "__main__":
    main()
