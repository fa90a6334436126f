"""Evaluate an agent on ALFWorld and report it in the layout of the AgentPRM paper's Table 1.

Every game of the split is played once, under the step cap; the table gives the success rate and the mean
number of actions, overall and per task type (Pick, Clean, Heat, Cool, Look, Pick2). The games are played by the
episode runner (:mod:`prm_gym.rollout.runner`): in consecutive groups of ``num_envs``, in lockstep, every turn
one :meth:`Agent.decide` call over the unfinished games of the group, so an LLM agent batches its generation
across games. Game ``i``'s env is reset with seed ``seed + i`` and the agent with the seed of its group's first
game, so results do not depend on which groups were played before (with ``num_envs=1``, game ``i`` is played
with seed ``seed + i``, env and agent, one game at a time). With an output folder, the episodes are written
there in the runner's format (``episodes.jsonl``, :mod:`prm_gym.rollout.storage`), so an interrupted evaluation
resumes at its first unfinished group and gives the same table as an uninterrupted one; the end writes
``results.json`` (the config, the table) and ``success.png`` (a bar chart).
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import prm_gym
from prm_gym.agents import Agent
from prm_gym.agents.registry import AgentConfig
from prm_gym.envs.alfworld.tasks import TASK_TYPES
from prm_gym.io import atomic_write_bytes, atomic_write_text
from prm_gym.rollout.runner import EpisodeSpec, RunConfig, run_episodes
from prm_gym.rollout.storage import Episode, load_episodes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "EvalConfig",
    "evaluate",
    "summarize",
    "format_table",
    "plot_success",
    "plot_success_rows",
    "plot_success_vs_n",
    "png_bytes",
]

#: Table 1's column order.
TABLE_COLUMNS = ("All", "Pick", "Clean", "Heat", "Cool", "Look", "Pick2")
#: Files an evaluation adds to its episodes folder.
RESULTS_FILE, CHART_FILE = "results.json", "success.png"
#: :func:`summarize`'s output: per column ("All", "Pick", ...), the success %, mean #actions and #games.
Summary = dict[str, dict[str, float]]


@dataclass
class EvalConfig(AgentConfig, RunConfig):
    """What to evaluate (the agent's settings), and on which games (the run's).

    Example:
        >>> config = EvalConfig(agent="random", split="tiny", num_envs=6)
        >>> (config.agent, config.split, config.max_episode_steps)
        ('random', 'tiny', 30)
    """

    def __post_init__(self) -> None:
        """Check the agent's settings and the run's."""
        AgentConfig.__post_init__(self)
        RunConfig.__post_init__(self)


def evaluate(agent: Agent, config: EvalConfig, *, progress: bool = True) -> list[Episode]:
    """Play every selected game once with ``agent`` and return one episode per game, in game order.

    With ``config.output_dir``, groups whose episodes are all in its ``episodes.jsonl`` are not played again, and
    the folder is locked while the evaluation writes there.

    Example:
        >>> from prm_gym.agents import WalkthroughAgent
        >>> episodes = evaluate(WalkthroughAgent(), EvalConfig(split="tiny", num_envs=3), progress=False)
        >>> all(episode.won for episode in episodes), len(episodes)
        (True, 6)

    Raises:
        ValueError: the output folder holds another run (other settings, agent or games), or another run is
            writing there.
    """
    num_games = len(config.games())
    specs = [EpisodeSpec(i, env_seed=config.seed + i, agent_seed=config.seed + i) for i in range(num_games)]
    played = run_episodes(agent, config, specs, run="eval", progress=progress)
    if config.output_dir is None:
        return played
    episodes = load_episodes(config.output_dir)
    _write_results(Path(config.output_dir), config, agent.name, episodes)
    return episodes


def _write_results(output: Path, config: EvalConfig, agent_name: str, episodes: Sequence[Episode]) -> None:
    summary = summarize(episodes)
    title = f"{agent_name} on {config.split} ({len(episodes)} games, cap {config.max_episode_steps} steps)"
    report: dict[str, Any] = {
        "agent": agent_name,
        "config": dataclasses.asdict(config),
        "prm_gym_version": prm_gym.__version__,
        "summary": summary,
        "table": format_table(summary, title),
    }
    atomic_write_text(output / RESULTS_FILE, json.dumps(report, indent=2) + "\n")
    atomic_write_bytes(output / CHART_FILE, plot_success(summary, title))


def summarize(episodes: Sequence[Episode]) -> Summary:
    """Success rate (%), mean number of actions and number of games: overall ("All") and per task type.

    Example:
        >>> import dataclasses
        >>> episode = Episode.from_actions("look at the mug", ["", "", "", ""], ["a", "b", "c", "d"], won=True)
        >>> summarize([dataclasses.replace(episode, task_type="look_at_obj_in_light")])["Look"]
        {'success': 100.0, 'actions': 4.0, 'games': 1.0}
    """
    label_of = {t.name: t.label for t in TASK_TYPES.values()}
    groups: dict[str, list[Episode]] = {column: [] for column in TABLE_COLUMNS}
    for episode in episodes:
        groups["All"].append(episode)
        groups[label_of[episode.task_type]].append(episode)
    return {
        column: {
            "success": 100.0 * sum(e.won for e in group) / len(group),
            "actions": sum(len(e.steps) for e in group) / len(group),
            "games": float(len(group)),
        }
        for column, group in groups.items()
        if group
    }


def format_table(summary: Summary, title: str = "") -> str:
    """Render :func:`summarize`'s output as a plain-text table in Table 1's column order."""
    columns = [c for c in TABLE_COLUMNS if c in summary]
    lines = [title] if title else []
    lines.append(f"{'':<12}" + "".join(f"{c:>8}" for c in columns))
    lines.append(f"{'success %':<12}" + "".join(f"{summary[c]['success']:>8.1f}" for c in columns))
    lines.append(f"{'#actions':<12}" + "".join(f"{summary[c]['actions']:>8.1f}" for c in columns))
    lines.append(f"{'#games':<12}" + "".join(f"{int(summary[c]['games']):>8d}" for c in columns))
    return "\n".join(lines)


def plot_success(summary: Summary, title: str = "") -> bytes:
    """Draw :func:`summarize`'s success rates as a bar chart in Table 1's column order; return the PNG bytes."""
    return plot_success_rows({"": summary}, title)


def plot_success_rows(
    rows: Mapping[str, Summary], title: str = "", errors: Mapping[str, Mapping[str, float]] | None = None
) -> bytes:
    """Draw several runs' success rates as grouped bars, one group per Table 1 column; return the PNG bytes.

    One bar per row in each group, named in a legend (a single row with the empty name draws one run's chart);
    ``errors[row][column]``, when given, is drawn as an error bar (a spread over seeds). A row without a column
    (a published row that gives only "All") has no bar there.

    Example:
        >>> row = {"All": {"success": 50.0, "actions": 10.0, "games": 2.0}}
        >>> plot_success_rows({"a": row, "b": row}, errors={"a": {"All": 5.0}})[1:4]
        b'PNG'
    """
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    columns = [c for c in TABLE_COLUMNS if any(c in summary for summary in rows.values())]
    width = 0.8 / len(rows)
    figure = Figure(
        figsize=(min(14.0, max(7.0, 2.0 + 0.25 * len(columns) * len(rows))), 3.5), dpi=100, layout="constrained"
    )
    axes = figure.subplots()
    for i, (label, summary) in enumerate(rows.items()):
        present = [j for j, column in enumerate(columns) if column in summary]
        offsets = [j + (i - (len(rows) - 1) / 2) * width for j in present]
        spread = (errors or {}).get(label, {})
        bars = axes.bar(
            offsets,
            [summary[columns[j]]["success"] for j in present],
            width,
            yerr=[spread.get(columns[j], 0.0) for j in present] if spread else None,
            capsize=3,
            color=["#444444" if columns[j] == "All" else "#4C72B0" for j in present] if len(rows) == 1 else f"C{i}",
            label=label or None,
        )
        if len(rows) <= 3:  # more labels than that overlap; the numbers are in the table
            axes.bar_label(bars, fmt="%.1f", fontsize=10 if len(rows) == 1 else 7)
    axes.set_xticks(range(len(columns)), columns)
    axes.set_ylim(0, 110)
    axes.set_ylabel("success %")
    axes.set_title(title, fontsize=10)
    if len(rows) > 1:
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return png_bytes(figure)


def plot_success_vs_n(
    lines: Mapping[str, Sequence[tuple[int, float, float]]],
    title: str = "",
    references: Mapping[str, float] | None = None,
) -> bytes:
    """Draw success % against N (Best-of-N's candidates per turn), one line per ``(n, mean, spread)`` series.

    The spread (over seeds) is drawn as error bars; N is on a log2 axis. ``references`` (label: success %) are
    drawn as dashed horizontal lines: what Best-of-N is to beat (the policy played greedily, say). Returns the
    PNG bytes.

    Example:
        >>> plot_success_vs_n({"best-of-N": [(1, 20.0, 2.0), (4, 35.0, 3.5)]}, references={"pi0": 30.6})[1:4]
        b'PNG'
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5), dpi=100, layout="constrained")
    axes = figure.subplots()
    for label, points in lines.items():
        ns, means, spreads = zip(*sorted(points), strict=True)
        axes.errorbar(ns, means, yerr=spreads, marker="o", capsize=3, label=label)
    for index, (label, success) in enumerate((references or {}).items(), start=len(lines)):
        axes.axhline(success, linestyle="--", linewidth=1, color=f"C{index % 10}", label=f"{label}: {success:.1f}")
    axes.set_xscale("log", base=2)
    ticks = sorted({n for points in lines.values() for n, _, _ in points})
    axes.set_xticks(ticks, [str(n) for n in ticks], minor=False)
    axes.minorticks_off()
    axes.set_xlabel("N")
    axes.set_ylabel("success %")
    axes.set_ylim(0, 105)
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=7)
    return png_bytes(figure)


def png_bytes(figure: Figure) -> bytes:
    """Return a matplotlib figure drawn as PNG bytes (the charts' one way out)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
