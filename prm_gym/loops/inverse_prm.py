"""The InversePRM loop (Choudhury 2025, Section 3), stage by stage, in one resumable run folder.

Process rewards from demonstrations alone: no stage reads a game's outcome to learn (the evaluations read it to
measure). Each stage is one of the library's commands with its output in the run folder::

    pi0/                     pi0 fine-tuned on the demonstrations (prm-gym sft), unless `policy` names one
    eval/pi0-s0/             pi0 evaluated, greedy (prm-gym eval)
    rollouts-pi0/            pi0's rollouts on train games (prm-gym collect)
    transitions-iq0/         the demonstrations' transitions against pi0's, next actions from pi0
    iq0/                     the InversePRM IQ0 trained on them (prm-gym train-inverse-prm)
    eval/bon4-pi0-iq0-s0/    Best-of-N(pi0, IQ0) evaluated, for each N and seed
    improve-pi1/ or pairs-pi1/, pi1/   policy improvement against IQ0 (every Best-of-N episode, or DPO pairs)
    eval/pi1-s0/, eval/bon4-pi1-iq0-s0/
    ... iteration 2: rollouts-pi1/, transitions-iq1/ (against pi0's and pi1's), iq1/ (warm-started), ...
    report/                  every evaluation in Table 1's layout (prm-gym report)
    loop.json                the settings and each finished stage's result

Example (from the command line, with the settings in a file)::

    prm-gym inverse-prm --config run.toml
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from prm_gym.io import lock_folder
from prm_gym.loops.config import InversePRMConfig
from prm_gym.loops.stages import NOT_COMPARED, LoopRun, PolicyStages, in_own_process, make_transitions
from prm_gym.policy.sft_config import SFTConfig
from prm_gym.rollout.demonstrations import load_demonstrations

__all__ = ["run_inverse_prm"]

logger = logging.getLogger(__name__)


def run_inverse_prm(config: InversePRMConfig, *, progress: bool = True) -> Path:
    """Run (or resume) the loop ``config`` describes; return the run folder, its report in ``report/``.

    Raises:
        FileNotFoundError: the demonstrations do not exist.
        ValueError: the demonstrations are malformed; the run folder holds a run with other settings, or is being
            written by another loop; or a stage's own error, after the stages before it were kept.
    """
    load_demonstrations(config.demonstrations, won_only=config.only_won_demonstrations)  # bad input: before any stage
    with lock_folder(config.output_dir, "InversePRM loop") as root:
        settings, defaults = dataclasses.asdict(config), dataclasses.asdict(InversePRMConfig())
        run = LoopRun(root, settings, ignored=NOT_COMPARED, defaults=defaults)
        _Stages(config, root, run, progress).run_loop()
    return root


@dataclasses.dataclass
class _Stages(PolicyStages):
    """The InversePRM loop's own stages: the transitions and the InversePRM trained on them."""

    config: InversePRMConfig
    reward_name = "iq"
    #: Every policy's rollouts so far: the transitions hold them all (the paper's negatives of past policies).
    all_rollouts: list[str] = dataclasses.field(default_factory=list, init=False)

    def reward_model(self, policy: str, rollouts: str, previous: str | None, i: int) -> str:
        """Pair the demonstrations' transitions with every policy's so far, then train IQ_{i-1} on them."""
        self.all_rollouts.append(rollouts)
        transitions = self.run.stage(f"transitions for iq{i - 1}", self.transitions, policy, list(self.all_rollouts),
                                     f"transitions-iq{i - 1}")  # fmt: skip
        start = previous if self.config.warm_start and previous else self.config.prm.model
        return self.run.stage(f"iq{i - 1}", self.inverse_prm, transitions, start, f"iq{i - 1}")

    def pi0_settings(self) -> SFTConfig:
        """Return pi0's fine-tuning settings: ``sft`` on the loop's demonstrations."""
        return dataclasses.replace(super().pi0_settings(), demonstrations=self.config.demonstrations,
                                   won_only=self.config.only_won_demonstrations)  # fmt: skip

    def transitions(self, policy: str, rollouts: list[str], folder: str) -> str:
        """Pair the demonstrations' transitions with those of every policy so far; next actions from ``policy``."""
        from prm_gym.agents.hf_agent import HFAgent  # torch: only for this stage

        demonstrations = load_demonstrations(self.config.demonstrations, won_only=self.config.only_won_demonstrations)
        hf = dataclasses.replace(self.config.hf, temperature=self.config.rollout_temperature)
        agent = HFAgent.from_pretrained(policy, hf, device=self.config.device)
        agent.reset(self.config.transitions.seed)
        source = {"demonstrations": self.config.demonstrations, "rollouts": rollouts, "policy": policy,
                  "hf": dataclasses.asdict(hf)}  # fmt: skip
        made, line = make_transitions(demonstrations, rollouts, agent, self.root / folder, self.config.transitions,
                                      source=source, progress=self.progress)  # fmt: skip
        logger.info("%s", line)
        return made

    def inverse_prm(self, transitions: str, start: str, folder: str) -> str:
        """Train an InversePRM on ``transitions``, from the backbone (or previous InversePRM) ``start``."""
        from prm_gym.prm.inverse_training import train_inverse_prm  # torch: only for this stage

        settings = dataclasses.replace(self.config.prm, transitions=transitions, model=start,
                                       output_dir=str(self.root / folder), device=self.config.device)  # fmt: skip
        return in_own_process(train_inverse_prm, settings)
