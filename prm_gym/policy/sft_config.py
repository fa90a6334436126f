"""The settings of a fine-tuning run (``prm-gym sft``); free of torch so that the CLI lists them anyway."""

from __future__ import annotations

from dataclasses import dataclass

from prm_gym.training_schedule import TrainingSchedule

__all__ = ["SFTConfig"]


@dataclass
class SFTConfig(TrainingSchedule):
    """Fine-tune a causal LM on demonstrations (a demonstrations file, or an episodes folder's won episodes).

    The optimiser settings are ``TrainingArguments``' (same names and meanings); the defaults suit full
    fine-tuning of a small model (use a learning rate around 2e-4 with ``lora``).

    Example:
        >>> config = SFTConfig(demonstrations="runs/demos", model="path/to/model", max_steps=100)
        >>> config.output_dir, config.lora
        ('runs/sft', False)
    """

    #: A demonstrations file (JSON lines: ``task``, ``observations``, ``actions`` per episode, each taken as won;
    #: see :mod:`prm_gym.rollout.demonstrations`) or an episodes folder (``prm-gym collect``, ``eval --output-dir``,
    #: ``prm-gym demonstrations``), whose won episodes are the demonstrations (``prm-gym collect --agent
    #: walkthrough --repeats 1`` makes ALFWorld's gold ones). Each won episode is one example.
    demonstrations: str = "runs/demos"
    #: Train on the won episodes only (False: on all of them, e.g. InversePRM's loop fine-tuning on every
    #: Best-of-N episode, as it reads no outcome).
    won_only: bool = True
    #: The causal LM to fine-tune: a Hugging Face model directory or hub id, or a .gguf file.
    model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    #: Checkpoints go here (checkpoint-<step>), with the run's config.json; the model to ``<output_dir>/model``.
    output_dir: str = "runs/sft"
    #: Token budget of a rendered prompt (older turns are dropped to fit; an episode that needs a drop is trained
    #: turn by turn); act with the same budget (``--hf.prompt.max-prompt-tokens``) to see what training saw.
    max_prompt_tokens: int = 2048
    #: Train on a seeded sample of this many examples (episodes, or turns where an episode is split; all when unset).
    max_examples: int | None = None
    #: Train LoRA adapters instead of every weight; only the adapters are saved (a few MB, loaded onto ``model``).
    lora: bool = False
    learning_rate: float = 2e-5
    #: Examples (whole episodes, most of them) per optimiser step and device.
    per_device_train_batch_size: int = 4
    #: "auto" (cuda, then mps, then cpu), "cpu", "cuda", ...
    device: str = "auto"
    #: Continue from the last complete checkpoint in output_dir (its config must match); --no-resume starts over.
    resume: bool = True

    def __post_init__(self) -> None:
        """Check the counts, naming the bad value."""
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"`max_examples` should be at least 1 (or unset for all). Received {self.max_examples}.")
        if self.max_prompt_tokens < 1:
            raise ValueError(f"`max_prompt_tokens` should be at least 1. Received {self.max_prompt_tokens}.")
