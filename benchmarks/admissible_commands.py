"""How many admissible commands an ALFWorld state can have: the size ``DiscreteCommands`` needs (``max_actions``).

    python benchmarks/admissible_commands.py --episodes 3 --steps 50 --seed 0

For every solvable game of every split (``train``, ``valid_seen``, ``valid_unseen``, ``valid_train``, ``tiny``),
plays ``--episodes`` seeded random episodes of up to ``--steps`` uniformly random admissible commands (longer than
the env's 30-step cap, to reach deeper states: open receptacles, an object in hand) with the fast engine, and
counts the admissible commands of every state met (resets included). Prints, per split, the states seen, the
largest list (and the game where it occurred), the 99th percentile and the mean. Random play is a lower bound
on the true maximum: lists grow with open receptacles and a held object, which a random walk reaches often but
not always. Results go to ``--output`` (one JSON object per split, written atomically, so a rerun resumes).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
from common import machine

from prm_gym.envs.alfworld import ALFWorldEnv, list_games
from prm_gym.io import atomic_write_text

SPLITS = ("tiny", "valid_seen", "valid_unseen", "valid_train", "train")


def measure_split(split: str, episodes: int, steps: int, seed: int) -> dict[str, object]:
    games = list_games(split)
    env = ALFWorldEnv(game_files=games, backend="fast", shuffle=False)
    counts: list[int] = []
    largest, largest_game = 0, ""
    start = time.perf_counter()
    for index, game in enumerate(games):
        rng = random.Random(f"{seed}:{game}")
        for _ in range(episodes):
            _, info = env.reset(options={"game": index})
            for step in range(steps + 1):
                commands = info["admissible_commands"]
                counts.append(len(commands))
                if len(commands) > largest:
                    largest, largest_game = len(commands), str(game)
                if step == steps:
                    break
                _, _, terminated, _, info = env.step(rng.choice(commands))
                if terminated:
                    counts.append(len(info["admissible_commands"]))
                    break
    env.close()
    return {
        "games": len(games),
        "states": len(counts),
        "max": largest,
        "max_game": largest_game,
        "p99": float(np.percentile(counts, 99)),
        "mean": float(np.mean(counts)),
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", nargs="+", default=list(SPLITS))
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs/admissible_commands.json"))
    args = parser.parse_args()
    print(machine())
    settings = {"episodes": args.episodes, "steps": args.steps, "seed": args.seed}
    results: dict[str, dict[str, object]] = {}
    if args.output.exists():
        saved = json.loads(args.output.read_text())
        if saved.get("settings") == settings:
            results = saved["splits"]
    for split in args.splits:
        if split not in results:
            results[split] = measure_split(split, args.episodes, args.steps, args.seed)
            atomic_write_text(args.output, json.dumps({"settings": settings, "splits": results}, indent=1))
        r = results[split]
        print(f"{split:>13}: {r['games']:>5} games, {r['states']:>7} states, max {r['max']:>3} "
              f"(p99 {r['p99']:.0f}, mean {r['mean']:.1f}) in {r['seconds']:.0f} s; max at {r['max_game']}")
    print("max over all splits:", max(int(results[s]["max"]) for s in args.splits))  # type: ignore[call-overload]


if __name__ == "__main__":
    main()
