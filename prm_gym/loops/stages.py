"""What the loops share: a run folder that remembers its finished stages, and the stages that are not one call.

A loop (AgentPRM, InversePRM) is a sequence of stages, each one of the library's commands writing its own folder
inside the run folder. :class:`LoopRun` records each stage's result in ``loop.json`` when it ends, so a rerun
skips the stages already done and resumes in the first one not done (which resumes from its own checkpoints or
episodes). The run's settings are recorded too: a rerun with other settings is refused, naming them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from prm_gym.evaluation import EvalConfig, evaluate
from prm_gym.io import atomic_write_text, config_differences, read_json_object
from prm_gym.loops.config import LoopConfig
from prm_gym.policy.sft_config import SFTConfig
from prm_gym.prm.inverse import TransitionsConfig, resample_next_actions, save_transitions, select_transitions
from prm_gym.prm.target_summary import target_shares
from prm_gym.prm.targets import TargetsConfig, compute_targets, save_targets, spread_games
from prm_gym.report import ReportConfig, build_report
from prm_gym.rollout.collect import CollectConfig, collect_rollouts
from prm_gym.rollout.runner import EXECUTION_FIELDS, open_run_agent
from prm_gym.rollout.storage import Episode, load_episodes, load_run_config
from prm_gym.training_schedule import EXECUTING

if TYPE_CHECKING:
    from prm_gym.agents.base import Agent

__all__ = ["LOOP_FILE", "NOT_COMPARED", "LoopRun", "PolicyStages", "in_own_process", "make_targets", "make_transitions"]

logger = logging.getLogger(__name__)

#: The run folder's record: the settings and each finished stage's result.
LOOP_FILE = "loop.json"

#: Settings a rerun may change and still continue the run: where it runs, how it plays and trains (not what), and
#: how far it goes (stages are named by iteration, N and seed, so more iterations, sizes or seeds only add stages).
_PLAYING = ("rollouts", "improvement.rollouts", "evaluation")
_TRAINING = ("sft", "prm", "improvement.sft", "improvement.dpo")
NOT_COMPARED = frozenset(
    {"output_dir", "device", "iterations", "best_of_n", "improved_best_of_n", "eval_seeds"}
    | {f"{s}.{name}" for s in _PLAYING for name in EXECUTION_FIELDS}
    | {f"{s}.{name}" for s in _TRAINING for name in EXECUTING}
)

#: A stage's section: an evaluation's or a collection's settings (agent and run settings both).
_Section = TypeVar("_Section", EvalConfig, CollectConfig)


class LoopRun:
    """A loop's run folder: its settings and the results of its finished stages, kept in ``loop.json``.

    Example:
        >>> import tempfile
        >>> run = LoopRun(tempfile.mkdtemp(), {"iterations": 1})
        >>> run.stage("first", lambda: "made")
        'made'
        >>> run.stage("first", lambda: "made again")  # done: its recorded result, nothing run
        'made'
    """

    def __init__(
        self,
        folder: str | Path,
        settings: Mapping[str, Any],
        ignored: Collection[str] = (),
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        """Open (or start) the run in ``folder``; ``defaults`` stand for settings its record lacks (added since).

        Raises:
            ValueError: when ``folder`` holds a run with other settings (those in ``ignored`` may differ).
        """
        self.folder = Path(folder)
        self.settings = json.loads(json.dumps(settings))
        self.finished: dict[str, Any] = {}
        path = self.folder / LOOP_FILE
        if path.is_file():
            recorded = read_json_object(path, remedy="delete it to start the run over")
            differences = config_differences(recorded.get("settings") or {}, self.settings, ignored=ignored,
                                             defaults=defaults)
            if differences:
                raise ValueError(
                    f"{self.folder} holds a run with other settings ({'; '.join(differences)}): choose another "
                    "output_dir, or rerun with the recorded settings to resume it."
                )
            self.finished = dict(recorded.get("finished") or {})

    def stage(self, name: str, run: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Return the stage's recorded result if it is done; else ``run(*args, **kwargs)``, record and return it.

        The result must be JSON (a folder's path, say): it is what later stages, in this run or a rerun, read.
        """
        if name in self.finished:
            logger.info("%s: done already.", name)
            return self.finished[name]
        logger.info("%s ...", name)
        result = run(*args, **kwargs)
        self.finished[name] = result
        record = {"settings": self.settings, "finished": self.finished}
        atomic_write_text(self.folder / LOOP_FILE, json.dumps(record, indent=2, default=str) + "\n")
        return result


def in_own_process(train: Callable[..., Path], *args: Any, **kwargs: Any) -> str:
    """Run a training stage, ``train(*args, **kwargs)``, in a process of its own; return the folder it made.

    Training holds gigabytes (the optimiser's state, activations, the allocator's caches) that a Python process
    does not give back to the system when it is done: in the loop's own process, the hours of evaluation after it
    would keep them (a 15.8 GB loop was once killed for memory that way). A fresh process ("spawn": none of this
    one's memory or threads) gives everything back when it ends. It logs as this one does, to the same stderr,
    and ends when this one does, killed or not: an orphaned training would go on alone, holding the CPUs and its
    folder's lock, while a rerun waits for it.

    Raises:
        RuntimeError: the process ended without an answer (killed, for example by the system for lack of memory).
        Exception: the stage's own error, as ``train`` raised it.
    """
    level = logging.getLogger().getEffectiveLevel()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context, initializer=_set_up_worker, initargs=(level, os.getpid())) as pool:
        try:
            return str(pool.submit(train, *args, **kwargs).result())
        except BrokenProcessPool:
            raise RuntimeError(
                f"The process running {train.__name__} ended without finishing (killed: for lack of memory, say). "
                "Rerun the same command: the stage resumes from its last checkpoint."
            ) from None


def _set_up_worker(level: int, parent: int) -> None:
    """Set a training process up: ``prm-gym``'s log messages (plain, from ``level`` on), and its end with ``parent``."""
    logging.basicConfig(level=level, format="%(message)s")
    threading.Thread(target=_end_with, args=(parent,), name="end-with-parent", daemon=True).start()


def _end_with(parent: int) -> None:
    """End this process once ``parent`` has ended (its parent is then another): checked every second."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)  # what it wrote is safe: a model folder appears whole, a checkpoint counts once Trainer completed it


def make_targets(
    rollouts: str | Path, output_dir: str | Path, config: TargetsConfig, *, progress: bool = True
) -> tuple[str, list[str]]:
    """Compute the Monte-Carlo targets of a rollouts folder and save them in ``output_dir`` (``prm-gym targets``).

    Returns:
        The targets folder, and lines summarising them: how many, and the won rollouts and positive targets of
        each kind of rollout (from the game's start, from an expert prefix).

    Raises:
        ValueError: when the rollouts give no target (see :func:`~prm_gym.prm.targets.save_targets`).
    """
    source = load_run_config(rollouts)  # read first: a damaged file must not wait for the targets
    episodes = spread_games(load_episodes(rollouts), config.num_games)
    targets = compute_targets(episodes, config, progress=progress)
    folder = save_targets(targets, output_dir, config, source=source)
    states = len({row.state_key for row in targets})
    lines = [f"{len(targets)} targets at {states} states from {len(episodes)} episodes in {folder}"]
    return str(folder), lines + [str(shares) for shares in target_shares(episodes, targets, config)]


@dataclasses.dataclass
class PolicyStages:
    """The stages both loops share: each runs one command into a folder of the run and returns what the next ones need.

    pi0, the policy's rollouts, the policy improvement (:meth:`improve`) and the evaluations, in the order
    :meth:`run_loop` runs them; a loop's own stages (its reward model's data and training) are a subclass's
    :meth:`reward_model`.
    """

    config: LoopConfig
    root: Path
    run: LoopRun
    progress: bool

    #: The reward model's name in stage and folder names, followed by the iteration: ``q0`` (AgentPRM's Q_0),
    #: ``iq0`` (InversePRM's).
    reward_name: ClassVar[str] = "q"

    def run_loop(self) -> None:
        """Run (or resume) the loop's stages in order, then the report.

        pi0, then for each iteration i: pi_{i-1}'s rollouts -> the reward model Q_{i-1} (:meth:`reward_model`)
        -> Best-of-N(pi_{i-1}, Q_{i-1}) evaluated -> pi_i (:meth:`improve`) -> pi_i and Best-of-N(pi_i, Q_{i-1})
        evaluated.
        """
        policy = self.run.stage("pi0", self.pi0)
        evaluations = self.evaluate_policy(policy, "pi0")
        reward_model: str | None = None
        for i in range(1, self.config.iterations + 1):
            pi, q = f"pi{i - 1}", f"{self.reward_name}{i - 1}"
            rollouts = self.run.stage(f"rollouts of {pi}", self.rollouts, policy, f"rollouts-{pi}")
            reward_model = self.reward_model(policy, rollouts, reward_model, i)
            evaluations += self.evaluate_best_of_n(policy, pi, reward_model, q, self.config.best_of_n)
            if self.config.improvement.method == "none":
                break
            policy = self.improve(policy, reward_model, rollouts, i)
            evaluations += self.evaluate_policy(policy, f"pi{i}")
            improved = self.config.improved_best_of_n
            sizes = self.config.best_of_n if improved is None else improved
            evaluations += self.evaluate_best_of_n(policy, f"pi{i}", reward_model, q, sizes)
        self.report(evaluations)

    def reward_model(self, policy: str, rollouts: str, previous: str | None, i: int) -> str:
        """Run the stages that train iteration ``i``'s reward model on ``policy``'s ``rollouts``; return it.

        ``previous`` is the last iteration's reward model (``None`` in the first), to start from with
        ``warm_start``. Each loop defines it.
        """
        raise NotImplementedError

    def pi0(self) -> str:
        """Return pi0: the given policy, or the fine-tuning of ``sft.model`` on the demonstrations."""
        if self.config.policy is not None:
            return self.config.policy
        from prm_gym.policy.sft import train_sft  # torch: only for this stage

        return in_own_process(train_sft, self.pi0_settings())

    def pi0_settings(self) -> SFTConfig:
        """Return pi0's fine-tuning settings: ``sft``, writing to the run's ``pi0/``."""
        return dataclasses.replace(self.config.sft, output_dir=str(self.root / "pi0"), device=self.config.device)

    def rollouts(self, policy: str, folder: str) -> str:
        """Roll ``policy`` out on the train games, sampling at ``rollout_temperature``."""
        hf = dataclasses.replace(self.config.hf, temperature=self.config.rollout_temperature)
        collect = self._agent(self.config.rollouts, folder, agent="hf", model=policy, hf=hf)
        return self._collect(collect)

    def improve(self, policy: str, reward_model: str, rollouts: str, i: int) -> str:
        """Return pi_i, made from ``policy`` (pi_{i-1}) and ``reward_model`` as ``improvement.method`` says.

        "dpo": preference pairs at states of ``rollouts``, then DPO; "rft": Best-of-N episodes, then fine-tuning
        (with "none" a loop stops before improving).
        """
        method, run = self.config.improvement.method, self.run
        if method == "dpo":
            pairs = run.stage(f"preference pairs for pi{i}", self.preference_pairs, policy, reward_model, rollouts,
                              f"pairs-pi{i}")  # fmt: skip
            return str(run.stage(f"pi{i}", self.dpo, policy, pairs, f"pi{i}"))
        episodes = run.stage(f"best-of-n episodes for pi{i}", self.improvement_episodes, policy, reward_model,
                             f"improve-pi{i}")  # fmt: skip
        return str(run.stage(f"pi{i}", self.fine_tune, policy, episodes, f"pi{i}"))

    def improvement_episodes(self, policy: str, reward_model: str, folder: str) -> str:
        """Play Best-of-N(policy, reward_model) on the train games: the episodes the next policy learns from."""
        improvement = self.config.improvement
        collect = self._agent(improvement.rollouts, folder, agent="best-of-n", policy="hf", model=policy,
                              reward_model=reward_model, n=improvement.n)  # fmt: skip
        return self._collect(collect)

    def fine_tune(self, policy: str, episodes: str, folder: str) -> str:
        """Fine-tune ``policy`` on the won ``episodes`` (rejection-sampling fine-tuning), or on all of them.

        With ``improvement.episodes="won"``, the policy is kept if none was won.
        """
        from prm_gym.policy.sft import train_sft  # torch: only for this stage

        if self.config.improvement.episodes == "won" and not any(e.won for e in load_episodes(episodes)):
            logger.warning("No Best-of-N episode in %s was won: %s keeps the policy it started from.", episodes, folder)
            return policy

        sft = dataclasses.replace(self.config.improvement.sft, model=policy, demonstrations=episodes,
                                  won_only=self.config.improvement.episodes == "won",
                                  output_dir=str(self.root / folder), device=self.config.device)  # fmt: skip
        return in_own_process(train_sft, sft)

    def preference_pairs(self, policy: str, reward_model: str, rollouts: str, folder: str) -> str:
        """Pair, at states of ``rollouts``, the policy's sampled actions that the PRM tells apart (DPO's data)."""
        from prm_gym.agents.hf_agent import HFAgent  # torch: only for this stage
        from prm_gym.policy.dpo import policy_preferences, sample_states, save_pairs
        from prm_gym.prm.model import ProcessRewardModel

        settings = self.config.improvement.dpo
        states = sample_states([c for e in load_episodes(rollouts) for c in e.contexts], settings)
        agent = HFAgent.from_pretrained(policy, self.config.hf, device=self.config.device)
        agent.reset(settings.seed)
        prm = ProcessRewardModel.from_pretrained(reward_model, device=self.config.device)
        pairs = policy_preferences(states, agent, prm, settings)
        logger.info("%d preference pairs at %d states of %s.", len(pairs), len(states), rollouts)
        source = {"policy": policy, "reward_model": reward_model, "rollouts": rollouts, "states": len(states),
                  "dpo": dataclasses.asdict(settings), "hf": dataclasses.asdict(self.config.hf)}  # fmt: skip
        return save_pairs(pairs, self.root / folder, source)

    def dpo(self, policy: str, pairs: str, folder: str) -> str:
        """Train ``policy`` by DPO on ``pairs``, anchored to itself (the reference)."""
        from prm_gym.policy.dpo import train_dpo  # torch and TRL: only for this stage

        settings, prompt = self.config.improvement.dpo, self.config.hf.prompt
        return in_own_process(train_dpo, policy, pairs, self.root / folder, settings, prompt, device=self.config.device)

    def evaluate_policy(self, policy: str, name: str) -> list[str]:
        """Evaluate ``policy`` (the loop's ``hf`` settings) once per evaluation seed; greedy, once (it repeats itself).

        Returns:
            The evaluation folders as the report takes them, labelled: ``<folder>=<name>``.
        """
        seeds = self.config.eval_seeds if self.config.hf.temperature > 0 else self.config.eval_seeds[:1]
        return [
            self.run.stage(f"eval {name} seed {seed}", self._evaluate, f"eval/{name}-s{seed}", seed, agent="hf",
                           model=policy) + f"={name}"  # fmt: skip
            for seed in seeds
        ]

    def evaluate_best_of_n(self, policy: str, name: str, reward_model: str, q: str, sizes: Sequence[int]) -> list[str]:
        """Evaluate Best-of-N(policy, reward_model) for each N of ``sizes`` and seed (labelled folders, as above)."""
        return [
            self.run.stage(f"eval best-of-{n}({name}, {q}) seed {seed}", self._evaluate,
                           f"eval/bon{n}-{name}-{q}-s{seed}", seed, agent="best-of-n", policy="hf", model=policy,
                           reward_model=reward_model, n=n) + f"=Best-of-{n}({name}, {q})"  # fmt: skip
            for n in sizes
            for seed in self.config.eval_seeds
        ]

    def report(self, evaluations: list[str]) -> None:
        """Put every evaluation (labelled folders) in Table 1's layout in the run's ``report/`` (prm-gym report)."""
        report = build_report(ReportConfig(runs=tuple(evaluations), output_dir=str(self.root / "report")))
        logger.info("Report: %s", self.root / "report" / report.files[0])

    def _evaluate(self, folder: str, seed: int, **agent: Any) -> str:
        """Evaluate the agent ``agent`` names on the evaluation games into ``folder``."""
        settings = self._agent(self.config.evaluation, folder, seed=seed, **agent)
        with open_run_agent(settings) as built:
            evaluate(built, settings, progress=self.progress)
        return str(settings.output_dir)

    def _collect(self, settings: CollectConfig) -> str:
        with open_run_agent(settings) as agent:
            return str(collect_rollouts(agent, settings, progress=self.progress))

    def _agent(self, section: _Section, folder: str, **agent: Any) -> _Section:
        """Return ``section`` with the loop's agent settings and ``agent``'s, writing to ``folder`` of the run."""
        fields: dict[str, Any] = {"hf": self.config.hf, "device": self.config.device, **agent}
        return dataclasses.replace(section, output_dir=str(self.root / folder), **fields)


def make_transitions(
    demonstrations: list[Episode],
    rollouts: Sequence[str | Path],
    policy: Agent,
    output_dir: str | Path,
    config: TransitionsConfig,
    *,
    source: Mapping[str, Any],
    progress: bool = True,
) -> tuple[str, str]:
    """Build and save InversePRM's transitions: ``demonstrations`` against the episodes of each rollouts folder.

    The last of ``rollouts`` is the current policy's (``policy``): its transitions keep their recorded next
    actions; every other transition gets its next action from ``policy`` (:mod:`prm_gym.prm.inverse`).

    Returns:
        The transitions folder, and a line summarising them.

    Raises:
        ValueError: when either class has no transition, or two rollouts folders have one name.
    """
    names = [Path(folder).name for folder in rollouts]
    if len(set(names)) < len(names):
        raise ValueError(f"The rollouts folders {list(map(str, rollouts))} share names: transitions are labelled by "
                         "their folder's name, so give each policy's rollouts a folder named its own.")  # fmt: skip
    by_source = {name: load_episodes(folder) for name, folder in zip(names, rollouts, strict=True)}
    chosen = select_transitions(demonstrations, by_source, config)
    current = Path(rollouts[-1]).name if rollouts else None
    chosen = resample_next_actions(chosen, policy, keep_source=current, progress=progress)
    folder = save_transitions(chosen, output_dir, config, source=source)
    experts = sum(t.expert for t in chosen)
    games = len({t.game_file for t in chosen if t.expert})
    line = (f"{len(chosen)} transitions in {folder}: {experts} expert ones ({games} games), {len(chosen) - experts} "
            f"of the policy from {', '.join(by_source)}")  # fmt: skip
    return str(folder), line
