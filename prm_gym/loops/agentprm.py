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

from prm_gym.io import lock_folder
from prm_gym.loops.config import AgentPRMConfig
from prm_gym.loops.stages import NOT_COMPARED, LoopRun, PolicyStages, in_own_process, make_targets

__all__ = ["run_agentprm"]

logger = logging.getLogger(__name__)


def run_agentprm(config: AgentPRMConfig, *, progress: bool = True) -> Path:
    """Run (or resume) the loop ``config`` describes; return the run folder, its report in ``report/``.

    Raises:
        ValueError: the run folder holds a run with other settings, or is being written by another loop; or a
            stage's own error (no won demonstration, no target, ...), after the stages before it were kept.
    """
    with lock_folder(config.output_dir, "AgentPRM loop") as root:
        settings, defaults = dataclasses.asdict(config), dataclasses.asdict(AgentPRMConfig())
        run = LoopRun(root, settings, ignored=NOT_COMPARED, defaults=defaults)
        _Stages(config, root, run, progress).run_loop()
    return root


class _Stages(PolicyStages):
    """The AgentPRM loop's own stages: Monte-Carlo targets and the PRM trained on them."""

    config: AgentPRMConfig

    def reward_model(self, policy: str, rollouts: str, previous: str | None, i: int) -> str:
        """Compute the rollouts' Monte-Carlo targets, then train Q_{i-1} on them (from ``previous``: warm start)."""
        targets = self.run.stage(f"targets of pi{i - 1}", self.targets, rollouts, f"targets-pi{i - 1}")
        start = previous if self.config.warm_start and previous else self.config.prm.model
        return self.run.stage(f"q{i - 1}", self.prm, targets, rollouts, start, f"q{i - 1}")

    def targets(self, rollouts: str, folder: str) -> str:
        """Compute the rollouts' Monte-Carlo targets."""
        targets, lines = make_targets(rollouts, self.root / folder, self.config.targets, progress=self.progress)
        for line in lines:
            logger.info("%s", line)
        return targets

    def prm(self, targets: str, rollouts: str, start: str, folder: str) -> str:
        """Train a PRM on ``targets`` (of ``rollouts``), from the backbone (or previous PRM) ``start``."""
        from prm_gym.prm.training import train_prm  # torch: only for this stage

        settings = dataclasses.replace(self.config.prm, targets=targets, rollouts=rollouts, model=start,
                                       output_dir=str(self.root / folder), device=self.config.device)  # fmt: skip
        return in_own_process(train_prm, settings)
