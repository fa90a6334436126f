"""Speed and memory of prm_gym/ALFWorld-v0's backends, side by side: same games, same command sequences.

    python benchmarks/fast_engine_speed.py --split valid_unseen --games 20 --steps 50 --seed 0

Both backends (``fast`` and the reference ``textworld``) are driven through :class:`ALFWorldEnv`, as users
drive them. Command sequences are seeded random walks (admissible commands, one in ten inadmissible), fixed
before any timing; both backends play them, and their observations are compared (a sanity check; the
parity test is benchmarks/fast_engine_parity.py). Reported: steps per second and step latency, on the first
play of each game (the fast engine translates operators and derives command texts the first time it meets
them) and on a second play of the same commands right after (its caches warm, as in rollouts); reset on a
game not loaded before (the fast engine's per-process game cache cleared, its domain and grammar string
caches warm, as after the first game of a run); reset on the same game; snapshot + restore (the fast engine
copies nothing; the reference replays every command since reset, so its cost grows with the steps taken);
memory per live env, each on its own game, measured in a fresh process per backend (tracemalloc: Python
allocations only, so it misses fast_downward's C++ state; RSS delta: everything, coarse). Times are this
process's CPU time (``time.process_time``), so that other jobs on a shared machine do not count.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path

from common import machine

from prm_gym.envs.alfworld import ALFWorldEnv, list_games
from prm_gym.envs.alfworld.fast import clear_game_cache

#: The clock of every timing: this process's CPU time, so that other jobs on a shared machine do not count.
clock = time.process_time

GARBAGE = ["go to nowhere", "", "take the moon from the sky"]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def command_sequences(games: Sequence[Path], steps: int, seed: int) -> list[list[str]]:
    env = ALFWorldEnv(game_files=games, backend="fast", shuffle=False)
    sequences = []
    for index, game in enumerate(games):
        rng = random.Random(f"{seed}:{game}")
        _, info = env.reset(options={"game": index})
        commands = []
        for _ in range(steps):
            command = rng.choice(GARBAGE) if rng.random() < 0.1 else rng.choice(info["admissible_commands"])
            commands.append(command)
            *_, info = env.step(command)
        sequences.append(commands)
    return sequences


def run_backend(
    backend: str, games: Sequence[Path], sequences: Sequence[Sequence[str]], before_load: Callable[[], None]
) -> tuple[list[float], list[float], list[float], list[float], list[str]]:
    """Play every sequence twice in a row.

    Returns new-game reset times, same-game reset times, step times of the first play and of the second
    (the fast engine's per-game caches warm, as in rollouts), and the observations of the first play.
    """
    env = ALFWorldEnv(game_files=games, backend=backend, shuffle=False)
    load_reset, reset, steps, replay_steps, observations = [], [], [], [], []
    for index, commands in enumerate(sequences):
        before_load()
        start = clock()
        env.reset(options={"game": index})
        load_reset.append(clock() - start)
        start = clock()
        obs, _ = env.reset(options={"game": index})
        reset.append(clock() - start)
        observations.append(obs)
        for command in commands:
            start = clock()
            obs, *_ = env.step(command)
            steps.append(clock() - start)
            observations.append(obs)
        env.reset(options={"game": index})
        for command in commands:
            start = clock()
            env.step(command)
            replay_steps.append(clock() - start)
    env.close()
    return load_reset, reset, steps, replay_steps, observations


def snapshot_restore_us(
    backend: str, games: Sequence[Path], sequences: Sequence[Sequence[str]], reps: int
) -> tuple[float, float, float]:
    """Mean times (µs) of an env snapshot (after the last command) and of restoring it and one taken after 1 command."""
    env = ALFWorldEnv(game_files=games, backend=backend, shuffle=False)
    snapshot_times, early_times, late_times = [], [], []
    for index, commands in enumerate(sequences):
        env.reset(options={"game": index})
        env.step(commands[0])
        early = env.snapshot()
        for command in commands[1:]:
            env.step(command)
        start = clock()
        for _ in range(reps):
            late = env.snapshot()
        snapshot_times.append((clock() - start) / reps)
        for snapshot, times in ((early, early_times), (late, late_times)):
            start = clock()
            for _ in range(reps):
                env.restore(snapshot)
            times.append((clock() - start) / reps)
    env.close()
    return tuple(statistics.mean(times) * 1e6 for times in (snapshot_times, early_times, late_times))  # type: ignore[return-value]


def memory_per_env(backend: str, games: Sequence[Path], sequences: Sequence[Sequence[str]]) -> tuple[float, float]:
    """MiB per live env (each on its own game, after playing its sequence): tracemalloc and RSS delta.

    Runs in a fresh process (see ``main``) so that neither backend reuses memory the other freed.
    """
    warm = ALFWorldEnv(game_files=games[:1], backend=backend)  # imports and per-process string caches
    warm.reset()
    warm.close()
    clear_game_cache()
    gc.collect()
    rss_before = rss_bytes()
    tracemalloc.start()
    envs = []
    for game, commands in zip(games, sequences, strict=True):
        env = ALFWorldEnv(game_files=[game], backend=backend)
        env.reset()
        for command in commands:
            env.step(command)
        envs.append(env)
    gc.collect()
    traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = rss_bytes() - rss_before
    mib = 1024 * 1024 * len(envs)
    for env in envs:
        env.close()
    return traced / mib, rss / mib


def ms(samples: Sequence[float]) -> str:
    values = sorted(samples)
    p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
    return f"{statistics.median(values) * 1000:.3f} / {p90 * 1000:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="valid_unseen")
    parser.add_argument("--games", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50, help="commands per game")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-games", type=int, default=8, help="live envs for the memory measurement")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    command = f"python {' '.join(sys.argv)}"  # read now: fast_downward (the reference's translator) rewrites sys.argv

    games = list_games(args.split, data_dir=args.data_dir)
    games = sorted(random.Random(args.seed).sample(games, min(args.games, len(games))))
    sequences = command_sequences(games, args.steps, args.seed)  # also warms the fast engine's string caches
    clear_game_cache()
    gc.collect()

    ref_load, ref_reset, ref_steps, ref_replay, ref_obs = run_backend("textworld", games, sequences, lambda: None)
    gc.collect()
    fast_load, fast_reset, fast_steps, fast_replay, fast_obs = run_backend("fast", games, sequences, clear_game_cache)
    differ = sum(a != b for a, b in zip(ref_obs, fast_obs, strict=True))
    reference_steps = min(args.steps, 10)  # the reference replays every step: keep its restores short
    ref_restore = snapshot_restore_us("textworld", games[:3], [s[:reference_steps] for s in sequences[:3]], reps=2)
    fast_restore = snapshot_restore_us("fast", games, sequences, reps=2000)
    memory_games, memory_sequences = games[: args.memory_games], sequences[: args.memory_games]
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        fast_mem = pool.apply(memory_per_env, ("fast", memory_games, memory_sequences))
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        ref_mem = pool.apply(memory_per_env, ("textworld", memory_games, memory_sequences))

    print(f"command: {command}")
    print(f"machine: {machine()}; times are CPU time of the benchmark process")
    print(f"split {args.split}: {len(games)} games x {args.steps} commands (seed {args.seed}); {len(ref_steps)} steps "
          f"per backend, through ALFWorldEnv; observations that differ: {differ}")

    def ratio(ref: Sequence[float], fast: Sequence[float]) -> str:
        return f"{statistics.median(ref) / statistics.median(fast):.0f}x"

    def per_second(ref: Sequence[float], fast: Sequence[float]) -> tuple[str, str, str]:
        return f"{len(ref) / sum(ref):.1f}", f"{len(fast) / sum(fast):.0f}", f"{sum(ref) / sum(fast):.0f}x"

    rows = [
        ("steps per second, 1st play of each game", *per_second(ref_steps, fast_steps)),
        ("steps per second, 2nd play (same commands)", *per_second(ref_replay, fast_replay)),
        ("step, 1st play, median / p90 (ms)", ms(ref_steps), ms(fast_steps), ratio(ref_steps, fast_steps)),
        ("step, 2nd play, median / p90 (ms)", ms(ref_replay), ms(fast_replay), ratio(ref_replay, fast_replay)),
        ("reset, new game, median / p90 (ms)", ms(ref_load), ms(fast_load), ratio(ref_load, fast_load)),
        ("reset, same game, median / p90 (ms)", ms(ref_reset), ms(fast_reset), ratio(ref_reset, fast_reset)),
        ("snapshot (µs)", f"{ref_restore[0]:.1f}", f"{fast_restore[0]:.1f}", ""),
        ("restore, 1 step after reset (µs)", f"{ref_restore[1]:.0f}", f"{fast_restore[1]:.1f}",
         f"{ref_restore[1] / fast_restore[1]:.0f}x"),
        (f"restore, {reference_steps} (ref) / {args.steps} (fast) steps (µs)", f"{ref_restore[2]:.0f}",
         f"{fast_restore[2]:.1f}", ""),
        ("snapshot + restore, worst of the above (µs)", "", f"{fast_restore[0] + fast_restore[2]:.1f}", ""),
        ("memory per live env, tracemalloc (MiB)", f"{ref_mem[0]:.2f}", f"{fast_mem[0]:.2f}", ""),
        ("memory per live env, RSS delta (MiB)", f"{ref_mem[1]:.2f}", f"{fast_mem[1]:.2f}", ""),
    ]
    print(f"{'':<46}{'textworld (reference)':>24}{'fast':>16}{'ratio':>8}")
    for name, ref, fast, speedup in rows:
        print(f"{name:<46}{ref:>24}{fast:>16}{speedup:>8}")


if __name__ == "__main__":
    main()
