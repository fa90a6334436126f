"""Reference agents on ALFWorld in Table 1's layout: success % per task type and seconds per episode.

    python benchmarks/agents_valid_unseen.py --agents random expert                       # all 134 games
    python benchmarks/agents_valid_unseen.py --agents hf-generate hf-loglik --games-per-type 2 --num-envs 2

``random`` and ``expert`` are the floor and the ceiling; ``hf-generate`` / ``hf-loglik`` are :class:`HFAgent`
with ``--model`` (default: the shared SmolLM2-135M-Instruct GGUF), zero-shot, greedy. With ``--games-per-type K``
the first K games of each task type are played (a balanced subset). Each
run writes a resumable evaluation folder under ``--output-dir``; seconds per episode are wall-clock.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from common import SHARED_GGUF, machine

import prm_gym  # noqa: F401
from prm_gym.agents import Agent, HFAgentConfig
from prm_gym.agents.registry import make_agent
from prm_gym.envs.alfworld.tasks import TASK_TYPES
from prm_gym.evaluation import EvalConfig, evaluate, format_table, summarize
from prm_gym.rollout import Episode


def build(name: str, model: str, num_envs: int) -> tuple[Agent, EvalConfig]:
    """Return the agent ``name`` and the base config it is evaluated with."""
    if name.startswith("hf-"):
        config = EvalConfig(agent="hf", model=model, hf=HFAgentConfig(mode=name.removeprefix("hf-")))  # type: ignore[arg-type]
    else:
        config = EvalConfig(agent=name)  # type: ignore[arg-type]
    config.num_envs = num_envs
    return make_agent(config, seed=config.seed), config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", nargs="+", default=["random", "expert", "hf-generate", "hf-loglik"])
    parser.add_argument("--split", default="valid_unseen")
    parser.add_argument("--games-per-type", type=int, default=None, help="first K games of each task type")
    parser.add_argument("--num-envs", type=int, default=1, help="games played in lockstep")
    parser.add_argument("--model", default=str(SHARED_GGUF))
    parser.add_argument("--output-dir", default="runs/bench_agents")
    args = parser.parse_args()

    print(f"machine: {machine()}")
    rows = []
    for name in args.agents:
        start = time.perf_counter()
        agent, base = build(name, args.model, args.num_envs)
        load_s = time.perf_counter() - start
        results: list[Episode] = []
        start = time.perf_counter()
        for task in TASK_TYPES.values():
            config = EvalConfig(**{**vars(base), "split": args.split, "task_types": (task.label,)})
            config.num_games, config.game_selection = args.games_per_type, "first"
            config.output_dir = str(Path(args.output_dir) / name / task.label)
            results += evaluate(agent, config, progress=False)
        seconds = time.perf_counter() - start
        summary = summarize(results)
        steps = sum(len(r.steps) for r in results)
        title = f"{agent.name} on {args.split}: {len(results)} games, {seconds / len(results):.1f} s/episode"
        print(format_table(summary, title))
        if hasattr(agent, "match_counts") and agent.match_counts:
            print(f"action match paths: {dict(agent.match_counts)}")
        print(f"loaded in {load_s:.1f} s; {seconds / steps:.2f} s/step; load average {os.getloadavg()[0]:.1f}\n")
        rows.append((agent.name, summary, seconds / len(results)))
    columns = ["All", "Pick", "Clean", "Heat", "Cool", "Look", "Pick2"]
    print("| agent | " + " | ".join(columns) + " | #actions | games | s/episode |")
    print("|---|" + "---:|" * (len(columns) + 3))
    for agent_name, summary, per_episode in rows:
        cells = [f"{summary[c]['success']:.1f}" if c in summary else "-" for c in columns]
        all_ = summary["All"]
        print(
            f"| {agent_name} | " + " | ".join(cells) + f" | {all_['actions']:.1f} | {int(all_['games'])} | "
            f"{per_episode:.1f} |"
        )


if __name__ == "__main__":
    main()
