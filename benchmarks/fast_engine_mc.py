"""Monte-Carlo workload: rollouts from every (state, action) of expert trajectories, fast vs reference backend.

    python benchmarks/fast_engine_mc.py --split valid_unseen --trajectories 20 --rollouts 16 --reference-rollouts 1

The workload of Monte-Carlo Q targets: for every step t of the walkthroughs (expert trajectories) of
``--trajectories`` seeded games, ``--rollouts`` rollouts, each of which goes back to the state s_t, plays the
expert action a_t, then uniformly random admissible commands until the game is won or the episode reaches
``--max-episode-steps`` steps (counted from the reset, as the paper's cap is). Going back to s_t is
``env.restore(snapshot)``: a copy with the fast backend, a reset and a replay of t commands with the reference
(TextWorld's engine cannot copy its state). The reference is too slow to play the whole workload here: it
plays the first ``--reference-rollouts`` rollouts of every (state, action), and its time for the whole
workload is extrapolated from its time per rollout. Both backends play the same rollouts (same seeds), and
their outcomes (won, steps) are compared. Walking the expert trajectories (resets, snapshots, the restore
and step that move on to s_{t+1}) is timed apart and counted once for both backends. Times are this
process's CPU time (``time.process_time``), so that other jobs on a shared machine do not count.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

from common import machine

from prm_gym.envs.alfworld import ALFWorldEnv, list_games

#: The clock of every timing: this process's CPU time, so that other jobs on a shared machine do not count.
clock = time.process_time


def rollouts(
    backend: str, games: list[Path], rollouts_per_pair: int, max_steps: int, seed: int
) -> tuple[float, float, dict[tuple[int, int, int], tuple[bool, int]]]:
    """Play the workload with ``backend``.

    Returns the time spent in rollouts, the time spent walking the expert trajectories (resets, snapshots,
    advancing), and each rollout's outcome, by (game, t, rollout).
    """
    env = ALFWorldEnv(game_files=games, backend=backend, shuffle=False, privileged=("walkthrough",))
    outcomes: dict[tuple[int, int, int], tuple[bool, int]] = {}
    in_rollouts = 0.0
    start = clock()
    for index in range(len(games)):
        _, info = env.reset(options={"game": index})
        for t, action in enumerate(info["walkthrough"]):
            state = env.snapshot()
            rollouts_start = clock()
            for k in range(rollouts_per_pair):
                rng = random.Random(f"{seed}:{index}:{t}:{k}")
                env.restore(state)
                _, _, terminated, _, info = env.step(action)
                steps = t + 1
                while not terminated and steps < max_steps:
                    _, _, terminated, _, info = env.step(rng.choice(info["admissible_commands"]))
                    steps += 1
                outcomes[(index, t, k)] = (bool(info["won"]), steps)
            in_rollouts += clock() - rollouts_start
            env.restore(state)
            env.step(action)  # on along the expert trajectory
    return in_rollouts, clock() - start - in_rollouts, outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="valid_unseen")
    parser.add_argument("--trajectories", type=int, default=20)
    parser.add_argument("--rollouts", type=int, default=16, help="rollouts per (state, action)")
    parser.add_argument("--reference-rollouts", type=int, default=1, help="rollouts per pair the reference plays")
    parser.add_argument("--max-episode-steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    command = f"python {' '.join(sys.argv)}"  # read now: fast_downward (the reference's translator) rewrites sys.argv

    games = list_games(args.split, data_dir=args.data_dir)
    games = sorted(random.Random(args.seed).sample(games, min(args.trajectories, len(games))))
    fast_rollouts, fast_walk, fast = rollouts("fast", games, args.rollouts, args.max_episode_steps, args.seed)
    ref_rollouts, ref_walk, ref = rollouts(
        "textworld", games, args.reference_rollouts, args.max_episode_steps, args.seed
    )
    differ = sum(fast[key] != outcome for key, outcome in ref.items())
    pairs = len({key[:2] for key in fast})
    fast_time = fast_rollouts + fast_walk
    ref_time = ref_rollouts + ref_walk
    ref_whole = ref_rollouts / len(ref) * len(fast) + ref_walk
    won = sum(w for w, _ in fast.values())

    print(f"command: {command}")
    print(f"machine: {machine()}; times are CPU time of the benchmark process")
    print(f"split {args.split}: {len(games)} expert trajectories, {pairs} (state, action) pairs, {args.rollouts} "
          f"rollouts each = {len(fast)} rollouts (cap {args.max_episode_steps} steps from reset; {won} won)")
    print(f"fast, snapshots:                {fast_time:10.1f} s  ({len(fast)} rollouts, "
          f"{fast_rollouts / len(fast) * 1e3:.2f} ms per rollout; {fast_walk:.1f} s walking the trajectories)")
    print(f"reference, reset + replay:      {ref_time:10.1f} s  ({len(ref)} rollouts, "
          f"{ref_rollouts / len(ref) * 1e3:.0f} ms per rollout; {ref_walk:.1f} s walking the trajectories)")
    print(f"reference, whole workload:      {ref_whole:10.1f} s  (extrapolated to {len(fast)} rollouts)")
    print(f"ratio (reference / fast):       {ref_whole / fast_time:10.0f}x")
    print(f"rollouts played by both: {len(ref)}; outcomes that differ: {differ}")


if __name__ == "__main__":
    main()
