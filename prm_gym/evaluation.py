"""Evaluate an agent on ALFWorld and report it in the layout of the AgentPRM paper's Table 1.

Every game of the split is played once, under the step cap; the table gives the success rate and the mean
number of actions, overall and per task type (Pick, Clean, Heat, Cool, Look, Pick2).
Games are played in consecutive groups of ``batch_size``, each game in its own env, in lockstep: every turn is
one :meth:`Agent.decide` call over the unfinished games of the group, so an LLM agent batches its generation
across games. With an output folder, each finished group's episodes are appended to ``episodes.jsonl`` (one
write), so an interrupted evaluation resumes at the first unfinished group (a moved folder, another ``device``
or ``data_dir`` spelling still resume; other settings are refused, by name); the end writes ``results.json``
(the config, the table) and ``success.png`` (a bar chart). Game ``i``'s env is reset with seed ``seed + i``
and the agent with the seed of its group's first game, so results do not depend on which groups were played
before, and a resumed run gives the same table as an uninterrupted one (with ``batch_size=1``, game ``i`` is
played with seed ``seed + i``, env and agent, one game at a time).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
from tqdm.auto import tqdm

import prm_gym  # noqa: F401  (registers the environments)
from prm_gym.agents import Agent, BestOfNAgent, Decision, ExpertAgent, RandomAgent, WalkthroughAgent
from prm_gym.agents.hf_config import HFAgentConfig
from prm_gym.envs.alfworld.env import DEFAULT_BACKEND
from prm_gym.envs.alfworld.tasks import TASK_TYPES
from prm_gym.io import (
    append_jsonl,
    atomic_write_bytes,
    atomic_write_text,
    config_differences,
    lock_folder,
    read_json_object,
    read_jsonl,
)
from prm_gym.prm.base import RewardModel
from prm_gym.prm.context import Context
from prm_gym.rollout.monte_carlo import MonteCarloConfig, MonteCarloRewardModel

__all__ = [
    "EvalConfig", "EpisodeResult", "agent_for", "evaluate", "make_agent", "summarize", "format_table", "plot_success",
]

#: Table 1's column order.
TABLE_COLUMNS = ("All", "Pick", "Clean", "Heat", "Cool", "Look", "Pick2")
#: Files of an evaluation's output folder.
EPISODES_FILE, CONFIG_FILE, RESULTS_FILE, CHART_FILE = "episodes.jsonl", "config.json", "results.json", "success.png"


@dataclass
class EvalConfig:
    """What to evaluate, and on which games."""

    #: The agent: "expert" plays the game's walkthrough and replans with a PDDL planner once off it (the
    #: ceiling), "walkthrough" only replays the gold commands, "random" picks admissible commands uniformly (the
    #: floor), "hf" is the causal LM `model` (settings in `hf`), "best-of-n" samples `n` actions from `policy`
    #: per turn and keeps the one `reward_model` scores best.
    agent: Literal["expert", "walkthrough", "random", "hf", "best-of-n"] = "expert"
    #: Best-of-N: the policy that proposes the candidates ("hf": the causal LM `model`).
    policy: Literal["random", "hf"] = "random"
    #: The "hf" agent or policy: a causal LM's hub id, local directory or .gguf file.
    model: str | None = None
    #: The "hf" agent or policy: generate (ReAct answers) or loglik (most likely command), sampling, prompt.
    hf: HFAgentConfig = field(default_factory=HFAgentConfig)
    #: Best-of-N: "monte-carlo" (Q estimated by random rollouts from each candidate's next state), or a trained
    #: process reward model (a directory written by `save_pretrained`, or a .gguf file).
    reward_model: str = "monte-carlo"
    #: Best-of-N: candidates per turn.
    n: int = 8
    #: Best-of-N with "monte-carlo": rollouts per candidate.
    mc_rollouts: int = 8
    #: ALFWorld engine: "fast" or "textworld" (the reference); both give the same turns.
    backend: str = DEFAULT_BACKEND
    #: Where the LM agent and a trained reward model run: "auto" (cuda, then mps, then cpu), "cpu", "cuda", ...
    device: str = "auto"
    #: ALFWorld split: train, valid_seen, valid_unseen (the paper's), valid_train, or the bundled tiny.
    split: str = "valid_unseen"
    #: Task types to keep (ids 1-6, names, or labels such as Pick2); empty keeps all.
    task_types: tuple[str, ...] = ()
    #: Play only the first N games of the split (all when unset).
    num_games: int | None = None
    #: Step cap per episode (the paper uses 30).
    max_episode_steps: int = 30
    #: Base seed: game i's env is reset with seed + i, the agent with seed + (first game of i's group).
    seed: int = 0
    #: Games played together, in lockstep, one `decide` call per turn over all of them (LLM agents batch it).
    batch_size: int = 1
    #: Folder holding ALFWorld's ``json_2.1.1/`` (default: $ALFWORLD_DATA, then the cache).
    data_dir: str | None = None
    #: Where to write episodes.jsonl, results.json and success.png (and resume from); nothing is written without.
    output_dir: str | None = None


@dataclass(frozen=True)
class EpisodeResult:
    """One played game."""

    game_file: str
    task_type: str
    won: bool
    #: Number of actions taken.
    steps: int
    actions: list[str] = field(default_factory=list)
    #: The game's index in the evaluated list.
    index: int = 0
    #: The agent's reason for each action (``None`` where it gave none).
    reasons: list[str | None] = field(default_factory=list)


def make_agent(name: str, seed: int | None = None) -> Agent:
    """Build a reference agent by name: "expert", "walkthrough" or "random"."""
    if name == "expert":
        return ExpertAgent()
    if name == "walkthrough":
        return WalkthroughAgent()
    if name == "random":
        return RandomAgent(seed=seed)
    raise ValueError(f"Unknown agent {name!r}: choose 'expert', 'walkthrough' or 'random'.")


def agent_for(config: EvalConfig) -> Agent:
    """Build the agent an evaluation config names (Best-of-N with its policy and reward model).

    Raises:
        ValueError: when the "hf" agent or policy is asked for without a `model`.
    """
    if config.agent == "hf":
        return _hf_agent(config)
    if config.agent != "best-of-n":
        return make_agent(config.agent, seed=config.seed)
    policy = _hf_agent(config) if config.policy == "hf" else make_agent(config.policy, seed=config.seed)
    reward_model: RewardModel
    if config.reward_model == "monte-carlo":
        mc = MonteCarloConfig(num_rollouts=config.mc_rollouts, max_episode_steps=config.max_episode_steps,
                              seed=config.seed, env_kwargs={"backend": config.backend})
        reward_model = MonteCarloRewardModel(mc)
    else:
        from prm_gym.prm.model import ProcessRewardModel  # torch: only when a trained model is asked for

        reward_model = ProcessRewardModel.from_pretrained(config.reward_model, device=config.device)
    agent = BestOfNAgent(policy, reward_model, n=config.n)
    agent.name = f"best-of-{config.n}({policy.name}, {_model_name(config.reward_model)})"
    return agent


def _hf_agent(config: EvalConfig) -> Agent:
    if config.model is None:
        raise ValueError("The 'hf' agent needs `model`: a causal LM's hub id, local directory or .gguf file.")
    from prm_gym.agents.hf_agent import HFAgent  # torch: only when a language model is asked for

    return HFAgent.from_pretrained(config.model, config.hf, device=config.device)


def _model_name(reward_model: str) -> str:
    return reward_model if reward_model == "monte-carlo" else Path(reward_model).name


def evaluate(agent: Agent, config: EvalConfig, *, progress: bool = True) -> list[EpisodeResult]:
    """Play every selected game once with ``agent`` and return one result per game, in game order.

    With ``config.output_dir``, groups whose episodes are all in its ``episodes.jsonl`` are not played again, and
    the folder is locked while the evaluation writes there.

    Example:
        >>> results = evaluate(WalkthroughAgent(), EvalConfig(split="tiny", batch_size=3), progress=False)
        >>> all(r.won for r in results), len(results)
        (True, 6)

    Raises:
        ValueError: ``config.batch_size`` or ``config.num_games`` is below 1, or the output folder holds an
            evaluation made with another config, agent or games, or another evaluation is writing there.
    """
    if config.batch_size < 1:
        raise ValueError(f"`batch_size` should be at least 1. Received {config.batch_size}.")
    if config.num_games is not None and config.num_games < 1:
        raise ValueError(f"`num_games` should be at least 1 (or unset for all games). Received {config.num_games}.")
    output = Path(config.output_dir) if config.output_dir is not None else None
    with contextlib.ExitStack() as stack:
        if output is not None:
            stack.enter_context(lock_folder(output, "evaluation"))
        results = _evaluate(agent, config, output, progress)
        if output is not None:
            _write_results(output, config, agent.name, results)
    return results


def _evaluate(agent: Agent, config: EvalConfig, output: Path | None, progress: bool) -> list[EpisodeResult]:
    """Play the games :func:`evaluate` is asked for, resuming from ``output`` and appending to it."""
    envs = [_make_env(config, agent.privileged)]
    results: list[EpisodeResult] = []
    try:
        games: list[Path] = envs[0].unwrapped.game_files  # type: ignore[attr-defined]
        num_games = len(games) if config.num_games is None else min(len(games), config.num_games)
        finished = _resume(output, config, agent.name, games) if output is not None else {}
        envs += [_make_env(config, agent.privileged) for _ in range(min(config.batch_size, num_games) - 1)]
        with tqdm(total=num_games, desc=f"{agent.name} on {config.split}", disable=not progress) as bar:
            for first in range(0, num_games, config.batch_size):
                indices = range(first, min(first + config.batch_size, num_games))
                if all(index in finished for index in indices):
                    group = [finished[index] for index in indices]
                else:
                    group = _play_group(envs, agent, indices, config.seed)
                    if output is not None:
                        append_jsonl(output / EPISODES_FILE, [dataclasses.asdict(result) for result in group])
                results += group
                bar.update(len(group))
    finally:
        for env in envs:
            env.close()
    return results


def _make_env(config: EvalConfig, privileged: Sequence[str] = ()) -> gym.Env[str, str]:
    """Make the env of one game of a group (each game of a group has its own, to be played in lockstep).

    ``privileged`` is what the agent asks of ``info`` (:attr:`~prm_gym.agents.base.Agent.privileged`).
    """
    return gym.make(
        "prm_gym/ALFWorld-v0",
        split=config.split,
        task_types=list(config.task_types) or None,
        data_dir=config.data_dir,
        max_episode_steps=config.max_episode_steps,
        backend=config.backend,
        privileged=tuple(privileged),
    )


@dataclass
class _Game:
    """One game of a lockstep group while it is played: its env, the evaluator's context and what was sent."""

    env: gym.Env[str, str]
    index: int
    context: Context
    task_type: str
    game_file: str
    actions: list[str] = field(default_factory=list)
    reasons: list[str | None] = field(default_factory=list)
    won: bool = False
    done: bool = False

    @classmethod
    def start(cls, env: gym.Env[str, str], index: int, seed: int) -> _Game:
        """Reset ``env`` on game ``index`` with ``seed``."""
        observation, info = env.reset(seed=seed, options={"game": index})
        return cls(env, index, Context.from_reset(observation, info), info["task_type"], info["game_file"])

    def step(self, decision: Decision) -> None:
        """Send the decision's action and move the context on to the env's answer."""
        self.actions.append(decision.action)
        self.reasons.append(decision.reason)
        observation, _, terminated, truncated, info = self.env.step(decision.action)
        self.context = self.context.propose(decision.action, decision.reason).advance(observation, info)
        self.won, self.done = bool(info["won"]), terminated or truncated

    def result(self) -> EpisodeResult:
        """Return the finished episode."""
        return EpisodeResult(
            self.game_file, self.task_type, self.won, len(self.actions), self.actions, self.index, self.reasons
        )


def _play_group(envs: Sequence[gym.Env[str, str]], agent: Agent, indices: range, seed: int) -> list[EpisodeResult]:
    """Play games ``indices`` in lockstep, one env each: per turn, one ``decide`` over the unfinished games.

    The agent is reset with the seed of the group's first game, so a replayed group plays exactly as before.
    """
    agent.reset(seed=seed + indices[0])
    games = [_Game.start(env, index, seed + index) for env, index in zip(envs, indices, strict=False)]
    while unfinished := [game for game in games if not game.done]:
        decisions = agent.decide([game.context for game in unfinished])
        if len(decisions) != len(unfinished):
            raise ValueError(f"{agent.name} returned {len(decisions)} decisions for {len(unfinished)} contexts.")
        for game, decision in zip(unfinished, decisions, strict=True):
            game.step(decision)
    return [game.result() for game in games]


#: EvalConfig fields that do not change the results (where they are written, where the model runs, and where
#: the games are read from: the games themselves are compared one by one): a folder resumes whatever they are.
_EXECUTION_FIELDS = ("output_dir", "device", "data_dir")


def _resume(output: Path, config: EvalConfig, agent_name: str, games: Sequence[Path]) -> dict[int, EpisodeResult]:
    """Check that ``output`` holds this evaluation (or nothing yet) and return the episodes it finished.

    Raises:
        ValueError: the folder's ``config.json`` is damaged or names other settings (each one is named with both
            values), or its episodes were played on other games or are damaged.
    """
    config_file, episodes = output / CONFIG_FILE, output / EPISODES_FILE
    remedy = "Evaluate into a new output_dir."
    if config_file.exists():
        recorded = read_json_object(config_file, remedy)
        if not isinstance(recorded.get("config"), dict):
            raise ValueError(f"{config_file} is not an evaluation's config: it lacks `config`. {remedy}")
        # Fields added since the folder was written (batch_size) take their defaults, which play as before did.
        settings = {**dataclasses.asdict(EvalConfig()), **recorded["config"]}
        differences = config_differences(settings, dataclasses.asdict(config), ignored=_EXECUTION_FIELDS)
        names = (recorded.get("agent"), agent_name)
        if names[0] != names[1] and names != (settings["agent"], config.agent):  # not said by `agent` already
            differences.insert(0, f"agent name: {names[0]!r} there, {names[1]!r} here")
        if differences:
            raise ValueError(
                f"{output} holds an evaluation of another config ({'; '.join(differences)}): choose another "
                "output_dir, or the same settings to resume it."
            )
    elif episodes.exists():
        raise ValueError(f"{episodes} exists without {CONFIG_FILE}: it was not written by `evaluate`. {remedy}")
    else:
        identity = {"agent": agent_name, "config": dataclasses.asdict(config)}
        atomic_write_text(config_file, json.dumps(identity, indent=2) + "\n")
    if not episodes.exists():
        return {}
    fields = {f.name for f in dataclasses.fields(EpisodeResult)}
    finished = {}
    for number, row in enumerate(read_jsonl(episodes, repair=True), start=1):
        if set(row) != fields:
            raise ValueError(f"Line {number} of {episodes} has the fields {sorted(row)}; expected {sorted(fields)}.")
        result = EpisodeResult(**row)
        if result.index < len(games) and _game_key(result.game_file) != _game_key(games[result.index]):
            raise ValueError(
                f"Line {number} of {episodes} played game {result.index} on {result.game_file}, but that game is "
                f"{games[result.index]} here: the games differ. {remedy}"
            )
        finished[result.index] = result
    return finished


def _game_key(game_file: str | Path) -> tuple[str, ...]:
    """Name a game independently of where the data folder is: its task folder, trial and file."""
    return Path(game_file).parts[-3:]


def _write_results(output: Path, config: EvalConfig, agent_name: str, results: Sequence[EpisodeResult]) -> None:
    summary = summarize(results)
    title = f"{agent_name} on {config.split} ({len(results)} games, cap {config.max_episode_steps} steps)"
    report: dict[str, Any] = {
        "agent": agent_name,
        "config": dataclasses.asdict(config),
        "prm_gym_version": prm_gym.__version__,
        "summary": summary,
        "table": format_table(summary, title),
    }
    atomic_write_text(output / RESULTS_FILE, json.dumps(report, indent=2) + "\n")
    atomic_write_bytes(output / CHART_FILE, plot_success(summary, title))


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


def plot_success(summary: dict[str, dict[str, float]], title: str = "") -> bytes:
    """Draw :func:`summarize`'s success rates as a bar chart in Table 1's column order; return the PNG bytes."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    columns = [c for c in TABLE_COLUMNS if c in summary]
    figure = Figure(figsize=(7, 3.5), dpi=100)
    axes = figure.subplots()
    bars = axes.bar(columns, [summary[c]["success"] for c in columns], color=["#444444"] + ["#4C72B0"] * 6)
    axes.bar_label(bars, fmt="%.1f")
    axes.set_ylim(0, 110)
    axes.set_ylabel("success %")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
