"""Evaluate an agent on ALFWorld and report it in the layout of the AgentPRM paper's Table 1.

Every game of the split is played once, in order, under the step cap; the table gives the success rate
and the mean number of actions, overall and per task type (Pick, Clean, Heat, Cool, Look, Pick2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import gymnasium as gym
from tqdm.auto import tqdm

import prm_gym  # noqa: F401  (registers the environments)
from prm_gym.agents import Agent, ExpertAgent, RandomAgent, WalkthroughAgent
from prm_gym.envs.alfworld.tasks import TASK_TYPES

__all__ = ["EvalConfig", "EpisodeResult", "evaluate", "make_agent", "summarize", "format_table"]

#: Table 1's column order.
TABLE_COLUMNS = ("All", "Pick", "Clean", "Heat", "Cool", "Look", "Pick2")


@dataclass
class EvalConfig:
    """What to evaluate, and on which games."""

    #: The agent: "expert" plays the game's walkthrough and replans with a PDDL planner once off it (the
    #: ceiling), "walkthrough" only replays the gold commands, "random" picks admissible commands uniformly (the
    #: floor).
    agent: Literal["expert", "walkthrough", "random"] = "expert"
    #: ALFWorld split: train, valid_seen, valid_unseen (the paper's), valid_train, or the bundled tiny.
    split: str = "valid_unseen"
    #: Task types to keep (ids 1-6, names, or labels such as Pick2); empty keeps all.
    task_types: tuple[str, ...] = ()
    #: Play only the first N games of the split (all when unset).
    num_games: int | None = None
    #: Step cap per episode (the paper uses 30).
    max_episode_steps: int = 30
    #: Seed of the env and the agent.
    seed: int = 0
    #: Folder holding ALFWorld's ``json_2.1.1/`` (default: $ALFWORLD_DATA, then the cache).
    data_dir: str | None = None


@dataclass(frozen=True)
class EpisodeResult:
    """One played game."""

    game_file: str
    task_type: str
    won: bool
    #: Number of actions taken.
    steps: int
    actions: list[str] = field(default_factory=list)


def make_agent(name: str, seed: int | None = None) -> Agent:
    """Build a reference agent by name."""
    if name == "expert":
        return ExpertAgent()
    if name == "walkthrough":
        return WalkthroughAgent()
    if name == "random":
        return RandomAgent(seed=seed)
    raise ValueError(f"Unknown agent {name!r}: choose 'expert', 'walkthrough' or 'random'.")


def evaluate(agent: Agent, config: EvalConfig, *, progress: bool = True) -> list[EpisodeResult]:
    """Play every selected game once with ``agent`` and return one result per game, in game order.

    Example:
        >>> results = evaluate(WalkthroughAgent(), EvalConfig(split="tiny"), progress=False)
        >>> all(r.won for r in results), len(results)
        (True, 6)
    """
    env = gym.make(
        "prm_gym/ALFWorld-v0",
        split=config.split,
        task_types=list(config.task_types) or None,
        data_dir=config.data_dir,
        max_episode_steps=config.max_episode_steps,
    )
    num_games = len(env.unwrapped.game_files)  # type: ignore[attr-defined]
    if config.num_games is not None:
        num_games = min(num_games, config.num_games)
    results = []
    try:
        for index in tqdm(range(num_games), desc=f"{agent.name} on {config.split}", disable=not progress):
            observation, info = env.reset(seed=config.seed if index == 0 else None, options={"game": index})
            agent.reset()
            task_type, game_file, actions = info["task_type"], info["game_file"], []
            done = False
            while not done:
                action = agent.act(observation, info)
                actions.append(action)
                observation, _, terminated, truncated, info = env.step(action)
                done = terminated or truncated
            results.append(EpisodeResult(game_file, task_type, bool(info["won"]), len(actions), actions))
    finally:
        env.close()
    return results


def summarize(results: Sequence[EpisodeResult]) -> dict[str, dict[str, float]]:
    """Success rate (%), mean number of actions and number of games: overall ("All") and per task type.

    Example:
        >>> summarize([EpisodeResult("g", "look_at_obj_in_light", True, 4)])["Look"]
        {'success': 100.0, 'actions': 4.0, 'games': 1.0}
    """
    label_of = {t.name: t.label for t in TASK_TYPES.values()}
    groups: dict[str, list[EpisodeResult]] = {column: [] for column in TABLE_COLUMNS}
    for result in results:
        groups["All"].append(result)
        groups[label_of[result.task_type]].append(result)
    return {
        column: {
            "success": 100.0 * sum(r.won for r in group) / len(group),
            "actions": sum(r.steps for r in group) / len(group),
            "games": float(len(group)),
        }
        for column, group in groups.items()
        if group
    }


def format_table(summary: dict[str, dict[str, float]], title: str = "") -> str:
    """Render :func:`summarize`'s output as a plain-text table in Table 1's column order."""
    columns = [c for c in TABLE_COLUMNS if c in summary]
    lines = [title] if title else []
    lines.append(f"{'':<12}" + "".join(f"{c:>8}" for c in columns))
    lines.append(f"{'success %':<12}" + "".join(f"{summary[c]['success']:>8.1f}" for c in columns))
    lines.append(f"{'#actions':<12}" + "".join(f"{summary[c]['actions']:>8.1f}" for c in columns))
    lines.append(f"{'#games':<12}" + "".join(f"{int(summary[c]['games']):>8d}" for c in columns))
    return "\n".join(lines)
