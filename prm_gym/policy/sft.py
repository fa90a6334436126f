"""Supervised fine-tuning of a causal LM on demonstrations: pi0 of the AgentPRM loop.

A turn's prompt is its state rendered for the assistant's turn (:func:`~prm_gym.prm.prompt.encode_contexts`, the
one renderer), its answer the command the demonstrator sent (:func:`~prm_gym.prm.prompt.encode_answers`:
``ACTION: <command>`` and the template's end of turn), and the loss is the cross-entropy of the answer tokens only
(the prompt's labels are ``-100``). These are exactly the tokens :class:`~prm_gym.agents.hf_agent.HFAgent` scores
in loglik mode and generates in generate mode, so the trained model acts as it was trained.

Because the renderer is append-only, the last turn's prompt and answer hold every earlier turn's prompt and answer
as prefixes, so a won episode is one example with the loss on each of its answers: the same loss per answer as one
example per turn, at a fraction of the tokens (~5x for ALFWorld's walkthroughs, ``benchmarks/RESULTS.md``, "Prompt
layouts"). Where the renders do not extend each other (``show_admissible_commands``, old turns dropped to fit the
budget), each turn is its own example. The model's head projects only the positions where the loss is
(``logits_to_keep``), not the whole prompt.

Training runs on ``transformers.Trainer`` (through :class:`~prm_gym.training_runs.ResumableTrainer`), weights in
float32 with bf16 autocast where the device computes in bf16 (:func:`prm_gym.devices.bf16_is_native`); the run
folder, its checkpoints and resume are those of :mod:`prm_gym.training_runs`. The fine-tuned model (with
``lora``, only its adapters: a few MB) and its tokenizer are saved to ``<output_dir>/model``, loadable by
``HFAgent.from_pretrained`` and ``prm-gym eval --agent hf --model <output_dir>/model``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

from prm_gym.checkpoints import ensure_pad_token, load_pretrained, max_positions, resolve_source, save_adapters
from prm_gym.devices import bf16_is_native, resolve_device
from prm_gym.io import atomic_directory, atomic_write_text, lock_folder
from prm_gym.policy.sft_config import SFTConfig
from prm_gym.prm.model import LoraSettings
from prm_gym.prm.prompt import PromptConfig, encode_answers, encode_contexts
from prm_gym.rollout.demonstrations import demonstrations_fingerprint, load_demonstrations
from prm_gym.rollout.storage import Episode
from prm_gym.training_runs import (
    RUN_CONFIG_FILE,
    TRAINING_RECORD_FILE,
    ResumableTrainer,
    checkpoint_step,
    checkpoint_to_resume,
    finished_run,
)
from prm_gym.training_schedule import EXECUTING

__all__ = ["answer_loss", "save_policy", "sft_examples", "train_sft"]

logger = logging.getLogger(__name__)

#: Settings a rerun may change and still continue the recorded run (where and how it runs, how a path is spelled).
_NOT_COMPARED = frozenset(
    {"sft.output_dir", "sft.device", "sft.resume", "sft.demonstrations"} | {f"sft.{name}" for name in EXECUTING}
)


def sft_examples(
    episodes: Sequence[Episode],
    tokenizer: Any,
    prompt: PromptConfig,
    *,
    positions: int | None = None,
    won_only: bool = True,
) -> list[dict[str, list[int]]]:
    """Return the training examples of the won ``episodes`` (all with ``won_only=False``): ``input_ids``, ``labels``.

    The labels are ``-100`` but on the answers.

    One example per episode when each turn's prompt and answer is a prefix of the last turn's (the append-only
    render), with every answer labelled; otherwise one example per turn, its own answer labelled. Either way each
    answer is learnt once, after the same tokens.

    Raises:
        ValueError: when no episode was won, or a turn does not fit ``positions`` (the message says how to fix it).
    """
    won = [episode for episode in episodes if episode.won or not won_only]
    if not won:
        raise ValueError(f"None of the {len(episodes)} demonstrations was won: there is nothing to imitate.")
    examples = []
    for episode in won:
        states = [dataclasses.replace(step.context, action=None, reason=None) for step in episode.steps]
        answers = encode_answers(episode.actions, tokenizer, prompt)
        longest = max(map(len, answers))
        prompts = encode_contexts(states, tokenizer, prompt, positions=positions, reserve=longest)
        turns = [(prompt_ids, prompt_ids + answer_ids) for prompt_ids, answer_ids in zip(prompts, answers, strict=True)]
        whole = turns[-1][1]
        if all(whole[: len(turn)] == turn for _, turn in turns):
            labels = [-100] * len(whole)
            for prompt_ids, turn in turns:
                labels[len(prompt_ids) : len(turn)] = turn[len(prompt_ids) :]
            examples.append({"input_ids": whole, "labels": labels})
        else:
            examples += [
                {"input_ids": turn, "labels": [-100] * len(prompt_ids) + turn[len(prompt_ids) :]}
                for prompt_ids, turn in turns
            ]
    return examples


def answer_loss(
    outputs: Any, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
) -> torch.Tensor:
    """Return the cross-entropy of the answer tokens, from logits computed at the answers' positions only.

    The model ran with ``logits_to_keep`` = the positions whose next token is labelled (:class:`_Collator`), so
    ``outputs.logits`` is one row per labelled token, in the order of ``labels[:, 1:]``'s labelled entries. The sum
    is divided by the labelled tokens of the whole accumulated batch (the Trainer's ``num_items_in_batch``), so
    that gradient accumulation gives the gradient of one large batch.
    """
    targets = labels[:, 1:][labels[:, 1:] != -100]
    loss = F.cross_entropy(outputs.logits.float(), targets.to(outputs.logits.device), reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else len(targets)
    return loss / count


def save_policy(
    model: Any, tokenizer: Any, model_dir: Path, record: Mapping[str, Any], lora_base: str | None = None
) -> None:
    """Save a trained policy in bf16 (half the size; it loads as float32 where bf16 is slow), its tokenizer, record.

    With ``lora_base`` (the model a peft ``model``'s adapters were trained on), only the adapters are saved:
    megabytes, loaded as that base with the adapters merged in (:func:`prm_gym.checkpoints.save_adapters`). The
    folder appears complete or not at all: its ``training.json`` says that the run finished.
    """
    with atomic_directory(model_dir) as folder:
        if lora_base is None:
            model.to(torch.bfloat16).save_pretrained(folder)
        else:
            save_adapters(model.to(torch.bfloat16), folder, lora_base)
        tokenizer.save_pretrained(folder)
        (folder / TRAINING_RECORD_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n", "utf-8")


class _Collator:
    """Pads examples on the right into a batch; padding is masked out of the attention and of the loss.

    ``logits_to_keep`` marks the positions whose logits the loss reads, so that the model projects only those.
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: Sequence[Mapping[str, list[int]]]) -> dict[str, torch.Tensor]:
        length = max(len(item["input_ids"]) for item in items)

        def padded(key: str, value: int) -> torch.Tensor:
            return torch.tensor([item[key] + [value] * (length - len(item[key])) for item in items])

        mask = torch.tensor([[1] * len(item["input_ids"]) + [0] * (length - len(item["input_ids"])) for item in items])
        labels = padded("labels", -100)
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = labels[:, 1:] != -100  # the positions that predict a labelled token
        return {"input_ids": padded("input_ids", self.pad_token_id), "attention_mask": mask, "labels": labels,
                "logits_to_keep": keep}  # fmt: skip


def train_sft(config: SFTConfig) -> Path:
    """Fine-tune ``config.model`` on the demonstrations; save it to ``<output_dir>/model`` and return that path.

    The demonstrations are a demonstrations file or an episodes folder's won episodes
    (:func:`~prm_gym.rollout.demonstrations.load_demonstrations`), recorded by their source and sha256
    (:func:`~prm_gym.rollout.demonstrations.demonstrations_fingerprint`).

    Checkpoints go to ``<output_dir>/checkpoint-<step>`` every ``save_steps`` steps and at the end. With ``resume``
    (the default), a run finding a complete checkpoint continues from the last one; one whose model folder is
    there with the same settings and demonstrations returns at once. The model folder appears complete or not
    at all, with ``training.json`` (settings, demonstrations, log history).

    Raises:
        FileNotFoundError: the demonstrations (file or folder) or the model does not exist.
        ValueError: a line of a demonstrations file is malformed (named); no demonstration was won; another run
            is writing output_dir; or its checkpoints were written with other settings or demonstrations (named).
    """
    episodes = load_demonstrations(config.demonstrations, won_only=config.won_only)
    model_path = Path(config.model)
    record: dict[str, Any] = {
        "sft": dataclasses.asdict(config) | ({"model": str(model_path.resolve())} if model_path.exists() else {}),
        **({"lora": dataclasses.asdict(LoraSettings())} if config.lora else {}),
        **demonstrations_fingerprint(config.demonstrations),
    }
    with lock_folder(config.output_dir, "fine-tuning") as output_dir:
        finished = finished_run(output_dir, record, ignored=_NOT_COMPARED) if config.resume else None
        if finished is not None:
            logger.info("%s was fine-tuned with these settings and demonstrations already (--no-resume trains it "
                        "again).", output_dir / "model")
            return output_dir / "model"
        checkpoint = checkpoint_to_resume(
            output_dir, record, resume=config.resume, ignored=_NOT_COMPARED, run="fine-tuning", command="sft"
        )
        device = resolve_device(config.device)
        source = resolve_source(config.model, dtype=torch.float32)
        tokenizer = load_pretrained(AutoTokenizer, source)
        ensure_pad_token(tokenizer)
        model = load_pretrained(AutoModelForCausalLM, source, dtype=torch.float32, use_safetensors=True)
        prompt = PromptConfig(max_prompt_tokens=config.max_prompt_tokens)
        examples = sft_examples(episodes, tokenizer, prompt, positions=max_positions(model), won_only=config.won_only)
        if config.max_examples is not None and config.max_examples < len(examples):
            examples = random.Random(config.seed).sample(examples, config.max_examples)
        if config.lora:
            from peft import get_peft_model

            model = get_peft_model(model, LoraSettings().to_peft("CAUSAL_LM"))
        bf16 = bf16_is_native(device)
        args = TrainingArguments(
            output_dir=str(output_dir), learning_rate=config.learning_rate, num_train_epochs=config.num_train_epochs,
            max_steps=config.max_steps, per_device_train_batch_size=config.per_device_train_batch_size,
            gradient_accumulation_steps=config.gradient_accumulation_steps, logging_steps=config.logging_steps,
            save_strategy="steps", save_steps=config.save_steps, save_total_limit=config.save_total_limit,
            seed=config.seed, bf16=bf16, use_cpu=device.type == "cpu", report_to="none", remove_unused_columns=False,
            activation_checkpointing=config.activation_checkpointing,
        )  # fmt: skip
        trainer = ResumableTrainer(
            model=model.to(device), args=args, train_dataset=examples, data_collator=_Collator(tokenizer.pad_token_id),
            compute_loss_func=answer_loss,
        )  # fmt: skip
        atomic_write_text(output_dir / RUN_CONFIG_FILE, json.dumps(record, indent=2) + "\n")
        if checkpoint is not None:
            logger.info("Resuming from %s (step %d).", checkpoint, checkpoint_step(checkpoint))
        logger.info("Fine-tuning on %d examples (%d answer tokens) from %d demonstrations (%d won).", len(examples),
                    sum(label != -100 for example in examples for label in example["labels"]), len(episodes),
                    sum(e.won for e in episodes))  # fmt: skip
        trainer.train(resume_from_checkpoint=checkpoint)
        record |= {"examples": len(examples), "prompt": dataclasses.asdict(prompt),
                   "log_history": trainer.state.log_history}  # fmt: skip
        save_policy(model, tokenizer, output_dir / "model", record, lora_base=config.model if config.lora else None)
        losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
        last = losses[-1] if losses else "none"
        logger.info("Fine-tuned %s (last logged training loss: %s).", output_dir / "model", last)
    return output_dir / "model"
