"""The settings of a policy's DPO step against a process reward model; free of torch so that configs list them."""

from __future__ import annotations

from dataclasses import dataclass

from prm_gym.training_schedule import TrainingSchedule

__all__ = ["DPOSettings"]


@dataclass
class DPOSettings(TrainingSchedule):
    """How preference pairs are drawn (the policy's samples, ranked by the PRM) and how DPO trains on them.

    The optimiser settings are TRL's ``DPOConfig``'s (same names and meanings).

    Example:
        >>> DPOSettings(max_states=64).candidates
        2
    """

    #: States drawn (seeded, without repeats) from the rollouts to make pairs at; all when unset.
    max_states: int | None = 512
    #: Actions the policy samples per state; the PRM's best is chosen, its worst rejected (the paper samples 2).
    candidates: int = 2
    #: Least PRM score gap between the chosen and the rejected action for a pair to be kept.
    min_gap: float = 0.05
    #: DPO's beta: the strength of the KL anchor to the reference policy (pi_{i-1}).
    beta: float = 0.1
    learning_rate: float = 1e-6

    def __post_init__(self) -> None:
        """Check the counts, naming the bad value."""
        if self.max_states is not None and self.max_states < 1:
            raise ValueError(f"`dpo.max_states` should be at least 1 (or unset). Received {self.max_states}.")
        if self.candidates < 2:
            raise ValueError(f"`dpo.candidates` should be at least 2. Received {self.candidates}.")
        if self.beta <= 0:
            raise ValueError(f"`dpo.beta` should be above 0. Received {self.beta}.")
