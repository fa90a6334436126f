"""Merge evaluation folders into one Table 1: ``prm-gym report RUN_DIR[=LABEL] ... [--paper]``.

Each folder is an evaluation (``prm-gym eval --output-dir``: ``config.json`` and ``episodes.jsonl``), summarised
by :func:`~prm_gym.evaluation.summarize`. Folders whose settings differ only in their seeds (:data:`SEED_FIELDS`)
and in how they were played (:data:`~prm_gym.rollout.runner.EXECUTION_FIELDS`) are one configuration: one row,
each number the mean over the seeds ± their sample standard deviation, with the number of seeds. A row is named
by its label (``RUN_DIR=label``), else by the agent's name, with the settings that tell it from rows of the same
agent (``random (max_episode_steps=8)``).

Runs of one model copied to several paths (adapters shipped from ``runs/`` to ``benchmarks/``) are one
configuration too: settings that name a model (:data:`MODEL_FIELDS`) are compared by what the path holds
(:func:`~prm_gym.model_copies.canonical_model_paths`), and a copy is shown by the first path given.

A folder whose episodes do not cover all of its run's games (an interrupted evaluation) is a row of its own,
marked ``partial: 80 of 134 games``, never merged with complete runs; runs over different games get a warning.
The run's games are listed from its settings (split, task types, number of games), so the report needs ALFWorld's
games where it runs (``prm-gym data``; the bundled ``tiny`` split needs none).
Best-of-N rows whose settings differ only in ``n`` make a success-vs-N chart (complete rows only), with the
other complete rows (the policy alone, random, expert) as dashed reference lines.

The output folder gets ``report.md`` (the table), ``report.png`` (grouped bars, the spread as error bars),
``report.json`` (every number, per seed too) and, when there are such rows, ``success_vs_n.png``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import tyro

import prm_gym
from prm_gym.evaluation import TABLE_COLUMNS, EvalConfig, Summary, plot_success_rows, plot_success_vs_n, summarize
from prm_gym.io import atomic_write_bytes, atomic_write_text
from prm_gym.model_copies import canonical_model_paths
from prm_gym.rollout.runner import EXECUTION_FIELDS, RunConfig
from prm_gym.rollout.storage import game_key, load_episodes, load_run_config

__all__ = [
    "MODEL_FIELDS",
    "PAPER_TABLE_1",
    "SEED_FIELDS",
    "EvalRun",
    "Report",
    "ReportConfig",
    "ReportRow",
    "build_report",
    "folder_and_label",
    "load_run",
]

#: Settings that only seed a run: runs that differ in nothing else are one row, averaged over them.
SEED_FIELDS = ("seed", "openai.seed")
#: Settings that name a model on disk: two paths holding copies of one model are the same setting.
MODEL_FIELDS = ("model", "reward_model")
#: Files the report writes.
REPORT_FILE, CHART_FILE, DATA_FILE, N_CHART_FILE = "report.md", "report.png", "report.json", "success_vs_n.png"
#: Choudhury 2025, "Process Reward Models for LLM Agents: Practical Framework and Directions", Table 1: success %
#: over all task types on ALFWorld valid_unseen (134 games, 30 steps), Llama-3.2-3B policies unless named.
PAPER_TABLE_1 = {
    "SFT pi0": 64.9,
    "AgentPRM pi1": 73.9,
    "AgentPRM pi2": 85.8,
    "AgentPRM pi3": 88.1,
    "AgentPRM pi3 + Best-of-16 (previous PRM)": 91.0,
    "ReAct GPT-4o": 65.7,
    "ReAct Claude-3.5-Sonnet": 76.1,
}
#: The games behind the paper's rows.
PAPER_GAMES = "134 (valid_unseen)"


@dataclass
class ReportConfig:
    """Which evaluation folders to merge into one Table 1, and where to write it.

    Example:
        >>> ReportConfig(runs=("runs/eval-random-0", "runs/eval-random-1=random"), paper=True).output_dir
        'runs/report'
    """

    #: Evaluation folders (`prm-gym eval --output-dir`); `FOLDER=label` names the row (runs with one label and the
    #: same settings but their seeds are merged).
    runs: Annotated[tuple[str, ...], tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR[=LABEL]...")] = ()
    #: Where report.md, report.png, report.json (and success_vs_n.png) go.
    output_dir: str = "runs/report"
    #: Add the paper's published Table 1 rows, marked "(paper)".
    paper: bool = False
    #: The report's title.
    title: str = "ALFWorld: success % / mean #actions per task type (the AgentPRM paper's Table 1 layout)"


@dataclass(frozen=True)
class EvalRun:
    """One evaluation folder, read back: what was run, on which games, and its summary."""

    folder: Path
    #: The label given on the command line (`FOLDER=label`), if any.
    label: str | None
    #: The agent's name, as recorded.
    agent: str
    #: The run's settings, flattened (``hf.temperature``), without seeds and execution fields.
    settings: dict[str, Any]
    #: The seed fields' values.
    seeds: dict[str, Any]
    summary: Summary
    #: The run's games (:func:`~prm_gym.rollout.storage.game_key` each), and how many of them were played.
    games: tuple[tuple[str, ...], ...]
    played: int

    @property
    def complete(self) -> bool:
        """Whether every game of the run was played."""
        return self.played == len(self.games)


@dataclass(frozen=True)
class ReportRow:
    """One row of the report: a configuration's runs (one per seed), or a published row.

    Example:
        >>> row = ReportRow("a", per_seed=({"All": {"success": 40.0}}, {"All": {"success": 60.0}}))
        >>> row.mean["All"]["success"], round(row.spread["All"]["success"], 2)
        (50.0, 14.14)
    """

    label: str
    #: One summary per seed (a published row: one summary with the published numbers only).
    per_seed: tuple[Summary, ...]
    runs: tuple[EvalRun, ...] = ()

    @property
    def mean(self) -> Summary:
        """The mean over seeds of each number of each column."""
        return {
            column: {metric: statistics.fmean(s[column][metric] for s in self.per_seed) for metric in cell}
            for column, cell in self.per_seed[0].items()
        }

    @property
    def spread(self) -> dict[str, dict[str, float]]:
        """The sample standard deviation over seeds of each number of each column (empty with one seed)."""
        if len(self.per_seed) < 2:
            return {}
        return {
            column: {metric: statistics.stdev(s[column][metric] for s in self.per_seed) for metric in cell}
            for column, cell in self.per_seed[0].items()
        }

    @property
    def games(self) -> str:
        """How many of the run's games were played: ``"134 of 134 games"`` or ``"partial: 80 of 134 games"``."""
        if not self.runs:
            return PAPER_GAMES
        run = self.runs[0]
        return ("" if run.complete else "partial: ") + f"{run.played} of {len(run.games)} games"


@dataclass(frozen=True)
class Report:
    """The merged table: its rows, the warnings about them, and the success-vs-N lines."""

    title: str
    rows: tuple[ReportRow, ...]
    warnings: tuple[str, ...] = ()
    #: Per Best-of-N configuration: ``(n, mean success %, std over seeds)`` points.
    success_vs_n: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)
    #: The files written (names in the output folder).
    files: tuple[str, ...] = ()

    def markdown(self) -> str:
        """Render the table as markdown: a row per configuration, a column per task type, then the warnings."""
        columns = [c for c in TABLE_COLUMNS if any(c in row.mean for row in self.rows)]
        lines = [
            f"# {self.title}",
            "",
            "Each cell: success % / mean #actions; over several seeds, the mean ± the sample standard deviation.",
            "",
            "| run | seeds | games | " + " | ".join(columns) + " |",
            "|:--|--:|:--|" + "--:|" * len(columns),
        ]
        for row in self.rows:
            seeds = str(len(row.runs)) if row.runs else "–"
            cells = [_cell(row.mean.get(c, {}), row.spread.get(c, {})) for c in columns]
            lines.append(f"| {row.label} | {seeds} | {row.games} | " + " | ".join(cells) + " |")
        if any(not row.runs for row in self.rows):
            lines += ["", "(paper): Choudhury 2025, Table 1 (Llama-3.2-3B policies); the overall success only."]
        lines += [""] + [f"**Warning:** {warning}" for warning in self.warnings]
        return "\n".join(lines).rstrip() + "\n"

    def to_json(self) -> dict[str, Any]:
        """Return every number of the report, per seed too, with the folders and seeds they come from."""
        return {
            "title": self.title,
            "spread": "sample standard deviation over seeds (null with one seed)",
            "prm_gym_version": prm_gym.__version__,
            "rows": [
                {
                    "label": row.label,
                    "source": "runs" if row.runs else "paper",
                    "folders": [str(run.folder) for run in row.runs],
                    "seeds": [run.seeds for run in row.runs],
                    "games": row.games,
                    "complete": all(run.complete for run in row.runs),
                    "mean": row.mean,
                    "spread": row.spread or None,
                    "per_seed": list(row.per_seed),
                }
                for row in self.rows
            ],
            "warnings": list(self.warnings),
            "success_vs_n": self.success_vs_n,
        }


def build_report(config: ReportConfig) -> Report:
    """Read the folders, merge runs that differ only in their seeds, and write the report's files.

    Raises:
        ValueError: no folder given, a folder that is not an evaluation (named), one label for runs with
            different settings, or episodes cut short (rerun the evaluation to finish them).
        FileNotFoundError: a folder without ``config.json`` or ``episodes.jsonl`` (named), or ALFWorld's games
            not found (:class:`~prm_gym.envs.alfworld.data.DataNotFoundError`: the message says what to run).
    """
    if not config.runs:
        raise ValueError("Give at least one evaluation folder (`prm-gym eval --output-dir DIR`) to report.")
    runs = _same_paths_for_copies([load_run(*folder_and_label(spec)) for spec in config.runs])
    rows = _rows(runs)
    if config.paper:
        rows += [ReportRow(f"{name} (paper)", ({"All": {"success": value}},)) for name, value in PAPER_TABLE_1.items()]
    report = Report(config.title, tuple(rows), tuple(_warnings(rows)), _success_vs_n(rows))
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / REPORT_FILE, report.markdown())
    atomic_write_text(output / DATA_FILE, json.dumps(report.to_json(), indent=2) + "\n")
    errors = {row.label: {column: cell["success"] for column, cell in row.spread.items()} for row in rows}
    chart = plot_success_rows({row.label: row.mean for row in rows}, config.title, errors)
    atomic_write_bytes(output / CHART_FILE, chart)
    files: tuple[str, ...] = (REPORT_FILE, DATA_FILE, CHART_FILE)
    if report.success_vs_n:
        references = {row.label: row.mean["All"]["success"] for row in rows if _is_reference(row)}
        chart = plot_success_vs_n(report.success_vs_n, "Best-of-N: success vs N", references)
        atomic_write_bytes(output / N_CHART_FILE, chart)
        files += (N_CHART_FILE,)
    return dataclasses.replace(report, files=files)


def load_run(folder: str | Path, label: str | None = None) -> EvalRun:
    """Read an evaluation folder: its settings, its summary, and how many of its games it played.

    Raises:
        ValueError: the folder holds another kind of run (collected rollouts), or damaged or cut-short episodes.
        FileNotFoundError: it has no ``config.json`` or ``episodes.jsonl``.
    """
    recorded = load_run_config(folder)
    if recorded["run"] != "eval":
        raise ValueError(
            f"{folder} holds a {recorded['run']!r} run, not an evaluation: give folders written by "
            "`prm-gym eval --output-dir`."
        )
    episodes = load_episodes(folder)
    flat = {**_flat(dataclasses.asdict(EvalConfig())), **_flat(recorded["config"])}
    run = RunConfig(
        split=flat["split"],
        task_types=tuple(flat["task_types"]),
        num_games=flat["num_games"],
        data_dir=flat["data_dir"] if flat["data_dir"] and Path(flat["data_dir"]).is_dir() else None,
    )
    games = tuple(game_key(game) for game in run.games())
    return EvalRun(
        folder=Path(folder),
        label=label,
        agent=str(recorded.get("agent")),
        settings={k: v for k, v in flat.items() if k not in EXECUTION_FIELDS and k not in SEED_FIELDS},
        seeds={k: flat[k] for k in SEED_FIELDS if k in flat},
        summary=summarize(episodes),
        games=games,
        played=len({e.game_index for e in episodes}),
    )


def folder_and_label(spec: str) -> tuple[str, str | None]:
    """Split ``FOLDER=label`` (a folder whose own name holds "=" is taken whole)."""
    if "=" not in spec or Path(spec).is_dir():
        return spec, None
    folder, label = spec.rsplit("=", 1)
    if not label:
        raise ValueError(f"{spec!r} gives an empty label: write FOLDER=label, or FOLDER alone.")
    return folder, label


def _flat(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested settings into dotted names (``hf.temperature``), values as JSON stores them."""
    flat: dict[str, Any] = {}
    for name, value in json.loads(json.dumps(settings)).items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{name}.")
        else:
            flat[prefix + name] = value
    return flat


def _same_paths_for_copies(runs: Sequence[EvalRun]) -> list[EvalRun]:
    """Name each copy of a model in the runs' settings by the first path given that holds it."""
    paths = [run.settings[name] for run in runs for name in MODEL_FIELDS if isinstance(run.settings.get(name), str)]
    copies = canonical_model_paths(paths)
    return [
        dataclasses.replace(
            run, settings={k: copies.get(v, v) if k in MODEL_FIELDS else v for k, v in run.settings.items()}
        )
        for run in runs
    ]


def _rows(runs: Sequence[EvalRun]) -> list[ReportRow]:
    """Group complete runs by (label, agent, settings); a partial run is a group of its own. Name each group."""
    groups: dict[Any, list[EvalRun]] = {}
    for run in runs:
        key = (run.label, run.agent, json.dumps(run.settings, sort_keys=True)) if run.complete else run.folder
        groups.setdefault(key, []).append(run)
    members = list(groups.values())
    for label in {g[0].label for g in members if g[0].label is not None}:
        named = [g[0] for g in members if g[0].label == label]
        if any(run.settings != named[0].settings or run.agent != named[0].agent for run in named):
            folders = ", ".join(str(run.folder) for run in named)
            raise ValueError(f"The label {label!r} names runs with different settings ({folders}): give each its own.")
    names = _distinguish([g[0].label or g[0].agent for g in members], [g[0].settings for g in members])
    names = [  # a partial run beside its complete seeds (or another partial run): named by its folder too
        f"{name} [{g[0].folder.name}]" if names.count(name) > 1 and not g[0].complete else name
        for name, g in zip(names, members, strict=True)
    ]
    return [ReportRow(name, tuple(run.summary for run in g), tuple(g)) for name, g in zip(names, members, strict=True)]


def _distinguish(names: Sequence[str], settings: Sequence[Mapping[str, Any]]) -> list[str]:
    """Append to each name shared by several rows the settings in which those rows differ: ``random (n=4)``."""
    named: list[str] = []
    for name in names:
        alike = [s for other, s in zip(names, settings, strict=True) if other == name]
        keys = {key for s in alike for key in s}
        differ = sorted(key for key in keys if len({json.dumps(s.get(key)) for s in alike}) > 1)
        mine = settings[len(named)]
        named.append(f"{name} ({', '.join(f'{k}={mine.get(k)}' for k in differ)})" if differ else name)
    return named


def _cell(mean: Mapping[str, float], spread: Mapping[str, float]) -> str:
    """``"66.7 ± 4.2 / 14.1 ± 0.5"``: success % / #actions, each ± its spread when there is one; "–" if absent."""
    parts = [
        f"{mean[metric]:.1f}" + (f" ± {spread[metric]:.1f}" if metric in spread else "") if metric in mean else "–"
        for metric in ("success", "actions")
    ]
    return " / ".join(parts) if mean else "–"


def _warnings(rows: Sequence[ReportRow]) -> list[str]:
    """Say which rows are partial, and whether the runs were played on different games."""
    warnings = [
        f"{row.label}: {row.games} ({row.runs[0].folder} was interrupted: rerun its `prm-gym eval` to finish it)."
        for row in rows
        if row.runs and not row.runs[0].complete
    ]
    game_sets: dict[tuple[tuple[str, ...], ...], list[str]] = {}
    for row in rows:
        if row.runs:
            game_sets.setdefault(row.runs[0].games, []).append(row.label)
    if len(game_sets) > 1:
        described = "; ".join(f"{len(games)} games: {', '.join(labels)}" for games, labels in game_sets.items())
        warnings.append(f"the runs were played on different games, so their numbers do not compare ({described}).")
    return warnings


def _is_reference(row: ReportRow) -> bool:
    """Whether a row is drawn beside the success-vs-N curves: a complete run of an agent other than Best-of-N."""
    return bool(row.runs) and all(run.complete for run in row.runs) and row.runs[0].settings["agent"] != "best-of-n"


def _success_vs_n(rows: Sequence[ReportRow]) -> dict[str, list[tuple[int, float, float]]]:
    """Best-of-N rows whose settings differ only in ``n``: per such family, ``(n, success, std)`` for each n."""
    families: dict[str, list[ReportRow]] = {}
    for row in rows:
        run = row.runs[0] if row.runs else None
        if run is not None and run.complete and run.settings["agent"] == "best-of-n":
            rest = {k: v for k, v in run.settings.items() if k != "n"}
            families.setdefault(json.dumps(rest, sort_keys=True), []).append(row)
    families = {key: family for key, family in families.items() if len({r.runs[0].settings["n"] for r in family}) > 1}
    # a family is named by its largest N's row (its label when given: "Best-of-4(pi0, Q0)" -> "Best-of-N(pi0, Q0)")
    largest = [max(family, key=lambda r: r.runs[0].settings["n"]) for family in families.values()]
    names = [re.sub(r"(?i)(best-of-)\d+", r"\1N", row.label) for row in largest]
    names = _distinguish(names, [json.loads(key) for key in families])
    return {
        name: [
            (int(r.runs[0].settings["n"]), r.mean["All"]["success"], r.spread.get("All", {}).get("success", 0.0))
            for r in sorted(family, key=lambda r: r.runs[0].settings["n"])
        ]
        for name, family in zip(names, families.values(), strict=True)
    }
