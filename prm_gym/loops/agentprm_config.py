"""The settings of an AgentPRM loop (``prm-gym agentprm``); free of torch so that the CLI lists them anyway.

Each stage of the loop is one of the library's commands, and its section is that command's config:
``rollouts`` is ``prm-gym collect``'s, ``targets`` is ``prm-gym targets``', ``prm`` is ``prm-gym train-prm``'s, and
so on. What links the stages (which policy plays, which reward model scores, where each output goes) is the
loop's to set: those fields must stay at their defaults in the sections (:data:`SET_BY_THE_LOOP`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from prm_gym.agents.hf_config import HFAgentConfig
from prm_gym.evaluation import EvalConfig
from prm_gym.policy.dpo_config import DPOSettings
from prm_gym.policy.sft_config import SFTConfig
from prm_gym.prm.targets import TargetsConfig
from prm_gym.prm.train_config import TrainPRMConfig
from prm_gym.rollout.collect import CollectConfig

__all__ = ["SET_BY_THE_LOOP", "AgentPRMConfig", "ImprovementConfig"]

#: Per section, the fields the loop sets (the agent of each stage, its model and reward model, its folders).
_AGENT = ("agent", "policy", "model", "hf", "reward_model", "n", "device", "output_dir")
SET_BY_THE_LOOP: dict[str, tuple[str, ...]] = {
    "rollouts": _AGENT,
    "improvement.rollouts": _AGENT,
    "evaluation": (*_AGENT, "seed"),
    "sft": ("output_dir", "device"),
    "improvement.sft": ("model", "demonstrations", "output_dir", "device"),
    "prm": ("targets", "output_dir", "device"),
}


def _rollouts() -> CollectConfig:
    """Return the policy's rollouts: 200 train games x 4, half of them from states along the expert's path."""
    return CollectConfig(split="train", num_games=200, repeats=4, expert_prefix_share=0.5, num_envs=8)


def _improvement_rollouts() -> CollectConfig:
    """Return Best-of-N's episodes for rejection-sampling fine-tuning: the same games, once each."""
    return CollectConfig(split="train", num_games=200, repeats=1, expert_prefix_share=0.5, num_envs=8)


@dataclass
class ImprovementConfig:
    """How pi_i is made from pi_{i-1} and the PRM Q_{i-1} (policy improvement).

    ``"dpo"`` (the paper's): at states of pi_{i-1}'s rollouts, pi_{i-1} samples ``dpo.candidates`` actions, Q_{i-1}
    picks the chosen and the rejected one, and DPO trains pi_i from pi_{i-1}, anchored to it by ``dpo.beta``
    (:mod:`prm_gym.policy.dpo`). ``"rft"`` (rejection-sampling fine-tuning, cheaper): Best-of-N(pi_{i-1}, Q_{i-1})
    plays ``rollouts``, and pi_{i-1} is fine-tuned (``sft``) on its won episodes: the PRM's choices that led to a
    win become the new policy's habits, and few steps from pi_{i-1} keep it close (the KL anchor, implicitly).
    ``"none"`` stops at the PRM (Best-of-N is then the loop's result).
    """

    method: Literal["dpo", "rft", "none"] = "rft"
    #: Candidates per turn of the Best-of-N that plays the fine-tuning episodes.
    n: int = 4
    #: The Best-of-N episodes (``prm-gym collect``'s settings).
    rollouts: CollectConfig = field(default_factory=_improvement_rollouts)
    #: The fine-tuning (``prm-gym sft``'s settings; starts from pi_{i-1}).
    sft: SFTConfig = field(default_factory=lambda: SFTConfig(learning_rate=1e-5))
    #: DPO's pairs and training ("dpo").
    dpo: DPOSettings = field(default_factory=DPOSettings)

    def __post_init__(self) -> None:
        """Check the method and ``n``."""
        if self.method not in ("dpo", "rft", "none"):
            raise ValueError(f"`improvement.method` should be 'dpo', 'rft' or 'none'. Received {self.method!r}.")
        if self.n < 1:
            raise ValueError(f"`improvement.n` should be at least 1. Received {self.n}.")


@dataclass
class AgentPRMConfig:
    """The AgentPRM loop: a policy's rollouts train a PRM, which picks the policy's actions and improves it.

    For each iteration i = 1 .. ``iterations``: rollouts of pi_{i-1} on train games -> Monte-Carlo targets ->
    PRM Q_{i-1} -> evaluation of Best-of-N(pi_{i-1}, Q_{i-1}) -> policy improvement to pi_i -> evaluation of
    pi_i and Best-of-N(pi_i, Q_{i-1}). pi0 is ``policy``, or the fine-tuning of ``sft.model`` on
    ``sft.demonstrations`` when ``policy`` is unset; it is evaluated first. A rerun resumes after the last
    finished stage (and inside it, from its own checkpoints).

    Example:
        >>> config = AgentPRMConfig(policy="runs/sft/model", iterations=2)
        >>> config.rollouts.split, config.rollouts.expert_prefix_share, config.evaluation.split, config.best_of_n
        ('train', 0.5, 'valid_unseen', (4,))
    """

    #: The run folder: every stage's output, ``loop.json`` (settings, finished stages) and ``report/``.
    output_dir: str = "runs/agentprm"
    iterations: int = 1
    #: pi0: a causal LM that already acts (directory, hub id or .gguf); unset: fine-tune one first (``sft``).
    policy: str | None = None
    #: How every policy acts: loglik (the most likely admissible command) by default, greedy in evaluations.
    hf: HFAgentConfig = field(default_factory=lambda: HFAgentConfig(mode="loglik"))
    #: The policy's temperature in the rollouts that train the PRM (above 0, so that repeats differ).
    rollout_temperature: float = 1.0
    #: pi0's fine-tuning on demonstrations, when ``policy`` is unset (``prm-gym sft``'s settings).
    sft: SFTConfig = field(default_factory=SFTConfig)
    #: The rollouts of pi_{i-1} (``prm-gym collect``'s settings).
    rollouts: CollectConfig = field(default_factory=_rollouts)
    #: Their Monte-Carlo targets (``prm-gym targets``' settings).
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    #: The PRM's training (``prm-gym train-prm``'s settings; ``prm.model`` is the backbone of Q0).
    prm: TrainPRMConfig = field(default_factory=TrainPRMConfig)
    #: Start Q_i (i >= 1) from Q_{i-1}'s weights instead of ``prm.model``.
    warm_start: bool = True
    improvement: ImprovementConfig = field(default_factory=ImprovementConfig)
    #: The evaluations (``prm-gym eval``'s settings: games, step cap, lockstep envs).
    evaluation: EvalConfig = field(default_factory=lambda: EvalConfig(split="valid_unseen", num_envs=8))
    #: The N of each Best-of-N evaluated with each PRM (1 is the policy sampled once).
    best_of_n: tuple[int, ...] = (4,)
    #: Seeds of the evaluations (the spread over seeds in the report); a greedy policy is evaluated with the first
    #: only (it would repeat itself), Best-of-N (which samples) with each.
    eval_seeds: tuple[int, ...] = (0,)
    #: Where the language models run: "auto" (cuda, then mps, then cpu), "cpu", "cuda", ...
    device: str = "auto"

    def __post_init__(self) -> None:
        """Check the counts, and that the sections leave the loop's fields at their defaults.

        Raises:
            ValueError: naming the bad value, or a field the loop sets (and which one would be ignored).
        """
        if self.iterations < 1:
            raise ValueError(f"`iterations` should be at least 1. Received {self.iterations}.")
        if self.rollout_temperature <= 0:
            raise ValueError(f"`rollout_temperature` should be above 0. Received {self.rollout_temperature}.")
        if not self.best_of_n or min(self.best_of_n) < 1:
            raise ValueError(f"`best_of_n` should list sizes of at least 1. Received {self.best_of_n}.")
        if not self.eval_seeds:
            raise ValueError("`eval_seeds` should list at least one seed.")
        for section, names in SET_BY_THE_LOOP.items():
            value = self
            for part in section.split("."):
                value = getattr(value, part)
            default = type(value)()
            for name in names:
                if getattr(value, name) != getattr(default, name):
                    raise ValueError(
                        f"`{section}.{name}` is set by the loop (it links the stages: agents, models, folders); "
                        "leave it out of the settings."
                    )

