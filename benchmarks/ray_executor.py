"""Episodes per second of random-agent collection: the local executor vs the Ray executor, same episodes.

    python benchmarks/ray_executor.py --split valid_unseen --repeats 4 --num-envs 2

Every run collects the same (game, repeat) episodes (``CollectConfig``, RandomAgent, the fast backend, the
30-step cap) into its own folder, and every folder must hold exactly the first one's episodes (checked). Runs:
the local executor with sync sub-envs (one process) and async ones (one process per sub-env); the Ray executor
with 1 and then as many actors as CPUs, each actor with sync sub-envs, on a Ray instance started before the
timing (so actor start-up is timed, Ray's own is not); and once more with as many actors, Ray started by the run
itself (``ray.init`` timed: what a one-off ``prm-gym collect --executor ray`` pays). Times are wall-clock: several
processes play at once, so other jobs on a shared machine slow them down; the load average is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import ray
from common import machine

from prm_gym.agents import RandomAgent
from prm_gym.rollout import CollectConfig, collect_rollouts, load_episodes


def collect(config: CollectConfig) -> float:
    """Collect ``config``'s episodes into its (fresh) folder; return the seconds it took."""
    start = time.perf_counter()
    collect_rollouts(RandomAgent(), config, progress=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="valid_unseen")
    parser.add_argument("--games", type=int, default=None, help="the first N games (default: all)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--num-envs", type=int, default=2)
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    print(machine())
    root = tempfile.mkdtemp(prefix="ray_executor_")
    base = CollectConfig(
        split=args.split, num_games=args.games, game_selection="first", repeats=args.repeats, num_envs=args.num_envs,
        backend="fast", vectorization="sync", output_dir=root,
    )  # fmt: skip
    runs = [
        ("local, sync sub-envs", {"vectorization": "sync"}, False),
        ("local, async sub-envs", {"vectorization": "async"}, False),
        ("ray, 1 actor", {"executor": "ray", "ray_actors": 1}, True),
        (f"ray, {cpus} actors", {"executor": "ray", "ray_actors": cpus}, True),
        (f"ray, {cpus} actors, ray.init timed", {"executor": "ray", "ray_actors": cpus}, False),
    ]
    reference = None
    episodes = len(base.games()) * args.repeats
    print(f"{episodes} episodes ({len(base.games())} games of {args.split} x {args.repeats}), num_envs={args.num_envs}")
    for number, (label, changes, warm_ray) in enumerate(runs):
        folder = os.path.join(root, str(number))
        config = dataclasses.replace(base, output_dir=folder, **changes)
        if warm_ray:
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        seconds = collect(config)
        if ray.is_initialized():
            ray.shutdown()
        played = load_episodes(folder)
        reference = reference or played
        if played != reference:
            raise AssertionError(f"{label}: other episodes than the first run's")
        steps = sum(len(episode.steps) for episode in played)
        print(f"{label:<36} {seconds:7.1f} s  {episodes / seconds:6.2f} episodes/s  {steps / seconds:7.1f} steps/s")
    print(f"load average after: {', '.join(f'{load:.2f}' for load in os.getloadavg())}")


if __name__ == "__main__":
    main()
