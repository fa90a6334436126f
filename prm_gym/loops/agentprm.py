"""The AgentPRM loop (Choudhury 2025, Algorithm 1), stage by stage, in one resumable run folder.

Each stage is one of the library's commands with its output in the run folder::

    pi0/                     pi0 fine-tuned on demonstrations (prm-gym sft), unless `policy` names one
    eval/pi0-s0/             pi0 evaluated, greedy (prm-gym eval)
    rollouts-pi0/            pi0's rollouts on train games, a share from expert states (prm-gym collect)
    targets-pi0/             their Monte-Carlo Q targets, the paper's Eq. 1 (prm-gym targets)
    q0/                      the PRM Q0 trained on them, soft BCE (prm-gym train-prm)
    eval/bon4-pi0-q0-s0/     Best-of-N(pi0, Q0) evaluated, for each N and seed
    improve-pi1/             Best-of-N(pi0, Q0) on train games: the episodes pi1 is fine-tuned on ("rft"), or
    pairs-pi1/               pi0's sampled actions at its rollouts' states, ranked by Q0 ("dpo")
    pi1/                     pi1: pi0 fine-tuned on the won episodes, or trained by DPO on the pairs
    eval/pi1-s0/, eval/bon4-pi1-q0-s0/
    ... iteration 2: rollouts-pi1/, targets-pi1/, q1/ (warm-started from q0), ...
    report/                  every evaluation in Table 1's layout (prm-gym report)
    loop.json                the settings and each finished stage's result

A rerun with the same settings skips the finished stages and resumes the first unfinished one from its own
checkpoints or episodes (:class:`~prm_gym.loops.stages.LoopRun`).

Example (from the command line, with the settings in a file)::

    prm-gym agentprm --config run.toml
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, TypeVar

from prm_gym.evaluation import EvalConfig, evaluate
from prm_gym.io import lock_folder
from prm_gym.loops.agentprm_config import AgentPRMConfig
from prm_gym.loops.stages import LoopRun, make_targets
from prm_gym.report import ReportConfig, build_report
from prm_gym.rollout.collect import CollectConfig, collect_rollouts
from prm_gym.rollout.runner import EXECUTION_FIELDS, open_run_agent
from prm_gym.rollout.storage import load_episodes

__all__ = ["run_agentprm"]

#: A stage's section: an evaluation's or a collection's settings (agent and run settings both).
_Section = TypeVar("_Section", EvalConfig, CollectConfig)

logger = logging.getLogger(__name__)

#: Settings a rerun may change and still continue the run: where it runs, how it plays (not what), and how far it
#: goes (stages are named by iteration, N and seed, so more iterations, sizes or seeds only add stages).
_PLAYING = ("rollouts", "improvement.rollouts", "evaluation")
_NOT_COMPARED = frozenset(
    {"output_dir", "device", "iterations", "best_of_n", "eval_seeds"}
    | {f"{s}.{name}" for s in _PLAYING for name in EXECUTION_FIELDS}
)


def run_agentprm(config: AgentPRMConfig, *, progress: bool = True) -> Path:
    """Run (or resume) the loop ``config`` describes; return the run folder, its report in ``report/``.

    Raises:
        ValueError: the run folder holds a run with other settings, or is being written by another loop; or a
            stage's own error (no won demonstration, no target, ...), after the stages before it were kept.
    """
    with lock_folder(config.output_dir, "AgentPRM loop") as root:
        run = LoopRun(root, dataclasses.asdict(config), ignored=_NOT_COMPARED)
        stages = _Stages(config, root, run, progress)
        policy = run.stage("pi0", stages.pi0)
        evaluations = stages.evaluate_policy(policy, "pi0")
        reward_model: str | None = None
        for i in range(1, config.iterations + 1):
            pi, q = f"pi{i - 1}", f"q{i - 1}"
            rollouts = run.stage(f"rollouts of {pi}", stages.rollouts, policy, f"rollouts-{pi}")
            targets = run.stage(f"targets of {pi}", stages.targets, rollouts, f"targets-{pi}")
            start = reward_model if config.warm_start and reward_model else config.prm.model
            reward_model = run.stage(q, stages.prm, targets, start, q)
            evaluations += stages.evaluate_best_of_n(policy, pi, reward_model, q)
            if config.improvement.method == "none":
                break
            if config.improvement.method == "dpo":
                pairs = run.stage(f"preference pairs for pi{i}", stages.preference_pairs, policy, reward_model,
                                  rollouts, f"pairs-pi{i}")  # fmt: skip
                policy = run.stage(f"pi{i}", stages.dpo, policy, pairs, f"pi{i}")
            else:
                episodes = run.stage(f"best-of-n episodes for pi{i}", stages.improvement_episodes, policy,
                                     reward_model, f"improve-pi{i}")  # fmt: skip
                policy = run.stage(f"pi{i}", stages.fine_tune, policy, episodes, f"pi{i}")
            evaluations += stages.evaluate_policy(policy, f"pi{i}")
            evaluations += stages.evaluate_best_of_n(policy, f"pi{i}", reward_model, q)
        report = build_report(ReportConfig(runs=tuple(evaluations), output_dir=str(root / "report")))
        logger.info("Report: %s", root / "report" / report.files[0])
    return root


@dataclasses.dataclass
class _Stages:
    """The loop's stages: each runs one command into a folder of the run and returns what the next ones need."""

    config: AgentPRMConfig
    root: Path
    run: LoopRun
    progress: bool

    def pi0(self) -> str:
        """Return pi0: the given policy, or the fine-tuning of ``sft.model`` on the demonstrations."""
        if self.config.policy is not None:
            return self.config.policy
        from prm_gym.policy.sft import train_sft  # torch: only for this stage

        sft = dataclasses.replace(self.config.sft, output_dir=str(self.root / "pi0"), device=self.config.device)
        return str(train_sft(sft))

    def rollouts(self, policy: str, folder: str) -> str:
        """Roll ``policy`` out on the train games, sampling at ``rollout_temperature``."""
        hf = dataclasses.replace(self.config.hf, temperature=self.config.rollout_temperature)
        collect = self._agent(self.config.rollouts, folder, agent="hf", model=policy, hf=hf)
        return self._collect(collect)

    def targets(self, rollouts: str, folder: str) -> str:
        """Compute the rollouts' Monte-Carlo targets."""
        targets, lines = make_targets(rollouts, self.root / folder, self.config.targets, progress=self.progress)
        for line in lines:
            logger.info("%s", line)
        return targets

    def prm(self, targets: str, start: str, folder: str) -> str:
        """Train a PRM on ``targets``, from the backbone (or previous PRM) ``start``."""
        from prm_gym.prm.training import train_prm  # torch: only for this stage

        settings = dataclasses.replace(
            self.config.prm, targets=targets, model=start, output_dir=str(self.root / folder), device=self.config.device
        )
        return str(train_prm(settings))

    def improvement_episodes(self, policy: str, reward_model: str, folder: str) -> str:
        """Play Best-of-N(policy, reward_model) on the train games: the episodes the next policy learns from."""
        improvement = self.config.improvement
        collect = self._agent(improvement.rollouts, folder, agent="best-of-n", policy="hf", model=policy,
                              reward_model=reward_model, n=improvement.n)  # fmt: skip
        return self._collect(collect)

    def fine_tune(self, policy: str, episodes: str, folder: str) -> str:
        """Fine-tune ``policy`` on the won ``episodes`` (rejection-sampling fine-tuning); keep it if none was won."""
        from prm_gym.policy.sft import train_sft  # torch: only for this stage

        won = sum(episode.won for episode in load_episodes(episodes))
        if not won:
            logger.warning("No Best-of-N episode in %s was won: %s keeps the policy it started from.", episodes, folder)
            return policy

        sft = dataclasses.replace(self.config.improvement.sft, model=policy, demonstrations=episodes,
                                  output_dir=str(self.root / folder), device=self.config.device)  # fmt: skip
        return str(train_sft(sft))

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
        return str(train_dpo(policy, pairs, self.root / folder, settings, prompt, device=self.config.device))

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

    def evaluate_best_of_n(self, policy: str, name: str, reward_model: str, q: str) -> list[str]:
        """Evaluate Best-of-N(policy, reward_model) for each N and evaluation seed (labelled folders, as above)."""
        return [
            self.run.stage(f"eval best-of-{n}({name}, {q}) seed {seed}", self._evaluate,
                           f"eval/bon{n}-{name}-{q}-s{seed}", seed, agent="best-of-n", policy="hf", model=policy,
                           reward_model=reward_model, n=n) + f"=Best-of-{n}({name}, {q})"  # fmt: skip
            for n in self.config.best_of_n
            for seed in self.config.eval_seeds
        ]

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
