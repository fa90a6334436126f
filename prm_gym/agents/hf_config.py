"""The settings of :class:`~prm_gym.agents.hf_agent.HFAgent`, importable without torch (for configs and the CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from prm_gym.prm.prompt import PromptConfig

__all__ = ["HFAgentConfig"]


@dataclass
class HFAgentConfig:
    """How an :class:`HFAgent` chooses: its mode, its sampling parameters, its batches and its prompt."""

    #: ``"generate"`` (write REASON/ACTION, map the action onto a command) or ``"loglik"`` (take the admissible
    #: command the model finds most likely).
    mode: Literal["generate", "loglik"] = "generate"
    #: Temperature of :meth:`HFAgent.decide`; 0 is greedy (deterministic).
    temperature: float = 0.0
    #: Temperature of :meth:`HFAgent.sample` (Best-of-N candidates); must be above 0 to give varied samples.
    sample_temperature: float = 0.7
    #: Nucleus sampling mass (generate mode, when sampling).
    top_p: float = 1.0
    #: Most new tokens per answer (generate mode); a REASON sentence and an ACTION line need far fewer than 96.
    max_new_tokens: int = 96
    #: Most padded tokens (prompt + answer, times samples) in one forward batch.
    max_batch_tokens: int = 16384
    #: Loglik mode: rank commands by mean log-probability per answer token instead of the sum.
    length_normalise: bool = False
    #: Read each prompt once: loglik answers run after it as packed suffixes (batched across the call's
    #: contexts), and the keys and values of the episode's previous prompt and answer, which start this turn's
    #: prompt (renders are append-only), are reused in both modes, so a turn runs only its new tokens. Off: full
    #: forwards (one per command in loglik mode), for comparisons; models that cannot (flash attention,
    #: sliding-window layers) get them too, with a warning. Same log-likelihoods up to rounding.
    prompt_reuse: bool = True
    #: Most tokens whose keys and values the agent keeps between turns (least recently used evicted); SmolLM2-135M
    #: takes 23 KB per token in bf16, so 16,384 tokens take 377 MB. 0 keeps none (prompts still read once per turn).
    prefix_cache_tokens: int = 16384
    #: How contexts are rendered (the reward models' renderer and settings).
    prompt: PromptConfig = field(default_factory=PromptConfig)

    def __post_init__(self) -> None:
        """Check the values, naming the bad one."""
        if self.mode not in ("generate", "loglik"):
            raise ValueError(f"`mode` should be 'generate' or 'loglik'. Received {self.mode!r}.")
        checks = [
            ("temperature", self.temperature >= 0, ">= 0"),
            ("sample_temperature", self.sample_temperature > 0, "> 0"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
            ("max_new_tokens", self.max_new_tokens >= 1, ">= 1"),
            ("max_batch_tokens", self.max_batch_tokens >= 1, ">= 1"),
            ("prefix_cache_tokens", self.prefix_cache_tokens >= 0, ">= 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"`{name}` should be {expected}. Received {getattr(self, name)!r}.")
