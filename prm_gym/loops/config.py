"""The settings of the loops (``prm-gym agentprm``, ``prm-gym inverse-prm``); free of torch so the CLI lists them.

Each stage of a loop is one of the library's commands, and its section is that command's config:
``rollouts`` is ``prm-gym collect``'s, ``targets`` is ``prm-gym targets``', ``prm`` is ``prm-gym train-prm``'s (or
``train-inverse-prm``'s), and so on. What links the stages (which policy plays, which reward model scores, where
each output goes) is the loop's to set: those fields must stay at their defaults in the sections
(:attr:`LoopConfig.set_by_the_loop`). :class:`LoopConfig` holds what both loops share: the policy, its
rollouts, the policy improvement and the evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from prm_gym.agents.hf_config import HFAgentConfig
from prm_gym.evaluation import EvalConfig
from prm_gym.policy.dpo_config import DPOSettings
from prm_gym.policy.sft_config import SFTConfig
from prm_gym.prm.inverse import TransitionsConfig
from prm_gym.prm.targets import TargetsConfig
from prm_gym.prm.train_config import TrainInversePRMConfig, TrainPRMConfig
from prm_gym.rollout.collect import CollectConfig

__all__ = ["SET_BY_THE_LOOP", "AgentPRMConfig", "ImprovementConfig", "InversePRMConfig", "LoopConfig"]

#: Per section, the fields the loop sets (the agent of each stage, its model and reward model, its folders).
_AGENT = ("agent", "policy", "model", "hf", "reward_model", "n", "device", "output_dir")
SET_BY_THE_LOOP: dict[str, tuple[str, ...]] = {
    "rollouts": _AGENT,
    "improvement.rollouts": _AGENT,
    "evaluation": (*_AGENT, "seed"),
    "sft": ("output_dir", "device"),
    "improvement.sft": ("model", "demonstrations", "won_only", "output_dir", "device"),
    "prm": ("targets", "rollouts", "output_dir", "device"),
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
    ``"none"`` stops at the PRM (Best-of-N is then the loop's result). With ``episodes="all"``, "rft" fine-tunes
    on every Best-of-N episode, won or not: Best-of-N distilled into the policy, with no outcome read (InversePRM's
    way, which has none).
    """

    method: Literal["dpo", "rft", "none"] = "rft"
    #: "rft": fine-tune on the "won" Best-of-N episodes, or on "all" of them.
    episodes: Literal["won", "all"] = "won"
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
        if self.episodes not in ("won", "all"):
            raise ValueError(f"`improvement.episodes` should be 'won' or 'all'. Received {self.episodes!r}.")
        if self.n < 1:
            raise ValueError(f"`improvement.n` should be at least 1. Received {self.n}.")


@dataclass
class LoopConfig:
    """What the loops share: pi0 and how policies act, their rollouts, the policy improvement, the evaluations.

    pi0 is ``policy``, or the fine-tuning of ``sft.model`` on demonstrations when ``policy`` is unset; it is
    evaluated first. A rerun resumes after the last finished stage (and inside it, from its own checkpoints).
    """

    #: Per section, the fields the loop sets (the agent of each stage, its model and reward model, its folders).
    set_by_the_loop: ClassVar[dict[str, tuple[str, ...]]] = SET_BY_THE_LOOP

    #: The run folder: every stage's output, ``loop.json`` (settings, finished stages) and ``report/``.
    output_dir: str = "runs/loop"
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
    #: Start Q_i (i >= 1) from Q_{i-1}'s weights instead of ``prm.model``.
    warm_start: bool = True
    improvement: ImprovementConfig = field(default_factory=ImprovementConfig)
    #: The evaluations (``prm-gym eval``'s settings: games, step cap, lockstep envs).
    evaluation: EvalConfig = field(default_factory=lambda: EvalConfig(split="valid_unseen", num_envs=8))
    #: The N of each Best-of-N evaluated with each PRM (1 is the policy sampled once).
    best_of_n: tuple[int, ...] = (4,)
    #: The N of each Best-of-N(pi_i, Q_{i-1}) evaluated after an improvement; unset: ``best_of_n``, empty: none.
    #: Each Best-of-N evaluation costs about an hour on a 2-core CPU: a run can draw pi0's curve over N and
    #: measure pi_i at one N.
    improved_best_of_n: tuple[int, ...] | None = None
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
        improved = self.improved_best_of_n
        if improved and min(improved) < 1:
            raise ValueError(f"`improved_best_of_n` should list sizes of at least 1. Received {improved}.")
        if not self.eval_seeds:
            raise ValueError("`eval_seeds` should list at least one seed.")
        for section, names in self.set_by_the_loop.items():
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


@dataclass
class AgentPRMConfig(LoopConfig):
    """The AgentPRM loop: a policy's rollouts train a PRM, which picks the policy's actions and improves it.

    For each iteration i = 1 .. ``iterations``: rollouts of pi_{i-1} on train games -> Monte-Carlo targets ->
    PRM Q_{i-1} -> evaluation of Best-of-N(pi_{i-1}, Q_{i-1}) -> policy improvement to pi_i -> evaluation of
    pi_i and Best-of-N(pi_i, Q_{i-1}) (:class:`LoopConfig` for pi0 and the shared settings).

    Example:
        >>> config = AgentPRMConfig(policy="runs/sft/model", iterations=2)
        >>> config.rollouts.split, config.rollouts.expert_prefix_share, config.evaluation.split, config.best_of_n
        ('train', 0.5, 'valid_unseen', (4,))
    """

    output_dir: str = "runs/agentprm"
    #: Their Monte-Carlo targets (``prm-gym targets``' settings).
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    #: The PRM's training (``prm-gym train-prm``'s settings; ``prm.model`` is the backbone of Q0).
    prm: TrainPRMConfig = field(default_factory=TrainPRMConfig)


def _inverse_rollouts() -> CollectConfig:
    """Return the policy's rollouts for InversePRM: 200 train games x 2, half from states along the expert's path."""
    return CollectConfig(split="train", num_games=200, repeats=2, expert_prefix_share=0.5, num_envs=8)


@dataclass
class InversePRMConfig(LoopConfig):
    """The InversePRM loop: demonstrations against the policy's rollouts train a PRM, with no outcome anywhere.

    For each iteration i = 1 .. ``iterations``: rollouts of pi_{i-1} on train games -> transitions (the
    demonstrations' against those of pi_0 .. pi_{i-1}, the next actions from pi_{i-1}) -> InversePRM IQ_{i-1} ->
    evaluation of Best-of-N(pi_{i-1}, IQ_{i-1}) -> policy improvement to pi_i (DPO on IQ's preferences, or
    fine-tuning on every Best-of-N episode: ``improvement.episodes`` must be "all", no outcome is read) ->
    evaluation of pi_i and Best-of-N(pi_i, IQ_{i-1}). pi0 is ``policy``, or ``sft.model`` fine-tuned on the
    demonstrations. Evaluations alone read the games' outcomes (to measure, not to learn).

    Example:
        >>> config = InversePRMConfig(demonstrations="runs/demos", policy="runs/sft/model")
        >>> config.improvement.episodes, config.prm.gamma, config.transitions.match_games
        ('all', 0.95, True)
    """

    set_by_the_loop: ClassVar[dict[str, tuple[str, ...]]] = {
        **SET_BY_THE_LOOP,
        "sft": ("demonstrations", "won_only", "output_dir", "device"),
        "prm": ("transitions", "output_dir", "device"),
    }

    output_dir: str = "runs/inverse-prm"
    #: The expert's demonstrations: a demonstrations file or an episodes folder (``prm-gym demonstrations``).
    demonstrations: str = "runs/demos"
    #: Read only the won episodes of an episodes folder as demonstrations (False: all of them, e.g. a degraded set).
    only_won_demonstrations: bool = True
    rollouts: CollectConfig = field(default_factory=_inverse_rollouts)
    improvement: ImprovementConfig = field(default_factory=lambda: ImprovementConfig(episodes="all"))
    #: Which transitions the InversePRM is trained on.
    transitions: TransitionsConfig = field(default_factory=TransitionsConfig)
    #: The InversePRM's training (``prm-gym train-inverse-prm``'s settings; ``prm.model`` is the backbone).
    prm: TrainInversePRMConfig = field(default_factory=TrainInversePRMConfig)

    def __post_init__(self) -> None:
        """Check the shared settings, and that the policy improvement reads no outcome."""
        super().__post_init__()
        if self.improvement.method == "rft" and self.improvement.episodes != "all":
            raise ValueError(
                "InversePRM reads no outcome: `improvement.episodes` must be 'all' (fine-tune on every Best-of-N "
                "episode), or use `improvement.method = 'dpo'`."
            )
