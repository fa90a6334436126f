"""Differential test: the fast ALFWorld engine against TextWorld's, turn by turn, on whole ALFWorld splits.

    python benchmarks/fast_engine_parity.py --splits valid_seen valid_unseen
    python benchmarks/fast_engine_parity.py --splits train --games-per-split 300 --seed 0

Each game is played by both engines as :func:`prm_gym.envs.alfworld.fast.parity.check_game` describes (the
walkthrough, then ``--random-walks`` seeded random walks of ``--steps`` commands over admissible and
inadmissible commands, with a snapshot/restore/replay check), comparing observation text, sorted admissible
commands, score, won and lost after every reset and step. Commands of the three previous games are mixed in
as inadmissible candidates. With ``--check-grounding``, each game's grounding is also compared with
fast_downward's translator. Mismatches are printed as they are found; the summary gives games, steps
(resets included) and mismatches per split; the exit status is 1 on any difference.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
from common import machine

from prm_gym.envs.alfworld.data import list_games
from prm_gym.envs.alfworld.fast import FastALFWorldEngine
from prm_gym.envs.alfworld.fast.grounding_check import translator_differences
from prm_gym.envs.alfworld.fast.parity import ParityCounts, check_game
from prm_gym.envs.engine import GameEngine, TextWorldEngine


def sweep_split(split: str, args: argparse.Namespace, ref: GameEngine, fast: GameEngine) -> tuple[ParityCounts, int]:
    games = list_games(split, data_dir=args.data_dir)
    if args.games_per_split is not None and args.games_per_split < len(games):
        games = sorted(random.Random(f"{args.seed}:{split}").sample(games, args.games_per_split))
    print(f"== {split}: {len(games)} games", flush=True)
    counts, grounding = ParityCounts(), 0
    walkthroughs: list[tuple[str, ...]] = []
    start = time.perf_counter()
    for index, game in enumerate(games):
        if args.check_grounding:
            for problem in translator_differences(game):
                grounding += 1
                print(f"GROUNDING differs in {game}: {problem}", flush=True)
        foreign = [command for walkthrough in walkthroughs[-3:] for command in walkthrough]
        found = check_game(
            game, ref, fast, random_walks=args.random_walks, steps=args.steps, seed=args.seed, foreign=foreign
        )
        walkthroughs.append(tuple(fast.walkthrough or ()))
        for failure in found.failures:
            print(failure, flush=True)
        counts += found
        if (index + 1) % 10 == 0:
            print(f"   {split}: {index + 1}/{len(games)} games, {counts.steps} steps, {counts.mismatches} mismatches "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    return counts, grounding


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", nargs="+", default=["valid_unseen"])
    parser.add_argument("--games-per-split", type=int, default=None, help="a seeded sample per split (default: all)")
    parser.add_argument("--random-walks", type=int, default=3, help="random walks per game")
    parser.add_argument("--steps", type=int, default=25, help="random commands per walk")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="folder holding json_2.1.1/ (default: prm-gym's lookup)")
    parser.add_argument("--check-grounding", action="store_true", help="compare with fast_downward's translator")
    args = parser.parse_args()

    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {machine()}", flush=True)
    ref, fast = TextWorldEngine(wrappers=[AlfredDemangler(shuffle=False)]), FastALFWorldEngine()
    start = time.perf_counter()
    results = {split: sweep_split(split, args, ref, fast) for split in args.splits}
    total, grounding = ParityCounts(), 0
    print(f"\n{'split':<14}{'games':>7}{'steps':>9}{'inadmissible':>14}{'replays':>9}{'mismatches':>12}")
    for split, (c, g) in results.items():
        print(f"{split:<14}{c.games:>7}{c.steps:>9}{c.inadmissible:>14}{c.snapshot_replays:>9}{c.mismatches:>12}")
        total += c
        grounding += g
    print(f"{'total':<14}{total.games:>7}{total.steps:>9}{total.inadmissible:>14}{total.snapshot_replays:>9}"
          f"{total.mismatches:>12}")
    print(f"({time.perf_counter() - start:.0f} s; steps include resets)")
    print("admissible commands played, by verb: " + ", ".join(f"{v} {n}" for v, n in total.verbs.most_common()))
    if args.check_grounding:
        print(f"grounding compared with fast_downward's translator: {grounding} differences")
    sys.exit(1 if total.mismatches or grounding else 0)


if __name__ == "__main__":
    main()
