"""Policy improvement by DPO against a process reward model: the AgentPRM paper's step from pi_{i-1} to pi_i.

At states the policy reached (its rollouts), the policy samples ``candidates`` actions; the PRM Q_{i-1} scores
them, and its best becomes ``chosen``, its worst ``rejected`` (pairs closer than ``min_gap`` are dropped:
:func:`policy_preferences`). TRL's ``DPOTrainer`` then trains pi_i from pi_{i-1} with the DPO loss

    -log sigmoid(beta * [(log pi(chosen) - log pi_ref(chosen)) - (log pi(rejected) - log pi_ref(rejected))])

with pi_ref = pi_{i-1}, whose log-probabilities are computed once before training (``precompute_ref_log_probs``):
the KL anchor to pi_{i-1} at the cost of one extra pass over the pairs. Prompts are the one renderer's
(:func:`~prm_gym.prm.prompt.render_text` of the state), answers ``ACTION: <command>`` as the policy acts
(:func:`~prm_gym.prm.prompt.answer_texts`, ending at the template's end-of-turn token). The pairs are drawn
once per iteration from pi_{i-1} (on-policy per iteration, as the paper's online DPO is per batch).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prm_gym.agents.base import Agent
from prm_gym.checkpoints import ensure_pad_token, load_pretrained, resolve_source
from prm_gym.devices import bf16_is_native, resolve_device
from prm_gym.io import atomic_write_text, lock_folder, read_jsonl
from prm_gym.policy.dpo_config import DPOSettings
from prm_gym.policy.sft import save_policy
from prm_gym.prm.base import RewardModel, checked_scores
from prm_gym.prm.context import Context
from prm_gym.prm.prompt import PromptConfig, answer_texts, render_text
from prm_gym.training_runs import (
    RUN_CONFIG_FILE,
    ResumableTrainer,
    checkpoint_step,
    checkpoint_to_resume,
    finished_run,
)
from prm_gym.training_schedule import EXECUTING

__all__ = ["PAIRS_FILE", "policy_preferences", "sample_states", "save_pairs", "train_dpo"]

logger = logging.getLogger(__name__)

#: The pairs folder's rows: the state, the chosen and rejected commands and their PRM scores.
PAIRS_FILE = "pairs.jsonl"
#: Settings a rerun may change and still continue the recorded run.
_NOT_COMPARED = frozenset({"output_dir", "device"} | {f"dpo.{name}" for name in EXECUTING})
#: Pairs asked of the policy and the PRM at once (bounds the memory of one sampling batch).
_CHUNK = 16


def policy_preferences(
    states: Sequence[Context], policy: Agent, reward_model: RewardModel, settings: DPOSettings
) -> list[dict[str, Any]]:
    """Return a preference pair per state where the PRM tells the policy's samples apart by ``min_gap`` at least.

    Each row: the state (``Context.to_dict``), ``chosen`` and ``rejected`` commands, and their scores.
    """
    pairs = []
    for start in range(0, len(states), _CHUNK):
        chunk = [dataclasses.replace(state, action=None, reason=None) for state in states[start : start + _CHUNK]]
        samples = policy.sample(chunk, settings.candidates)
        proposals = [(state, sorted({d.action for d in got})) for state, got in zip(chunk, samples, strict=True)]
        contexts = [state.propose(action) for state, actions in proposals for action in actions]
        scores = iter(checked_scores(reward_model, contexts) if contexts else [])
        for state, actions in proposals:
            ranked = sorted(((next(scores), action) for action in actions), reverse=True)
            (best, chosen), (worst, rejected) = ranked[0], ranked[-1]
            if len(actions) > 1 and best - worst >= settings.min_gap:
                pairs.append({"context": state.to_dict(), "chosen": chosen, "rejected": rejected,
                              "chosen_score": best, "rejected_score": worst})  # fmt: skip
    return pairs


def save_pairs(pairs: Sequence[dict[str, Any]], folder: str | Path, source: dict[str, Any]) -> str:
    """Write ``pairs.jsonl`` and ``config.json`` (what made them) into ``folder`` atomically; return the folder.

    Raises:
        ValueError: when there is no pair (the PRM never told the policy's samples apart).
    """
    if not pairs:
        raise ValueError(
            "No preference pair: the PRM scored the policy's samples within `min_gap` of each other everywhere "
            "(or the policy always sampled one command). Lower `dpo.min_gap`, raise `dpo.candidates` or the "
            "policy's `sample_temperature`."
        )
    folder = Path(folder)
    atomic_write_text(folder / PAIRS_FILE, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in pairs))
    atomic_write_text(folder / RUN_CONFIG_FILE, json.dumps(source, indent=2, default=str) + "\n")
    return str(folder)


def sample_states(contexts: Sequence[Context], settings: DPOSettings) -> list[Context]:
    """Return a seeded sample of ``max_states`` distinct states (by text) of ``contexts`` with commands."""
    states = list({c.state_key: c for c in contexts if c.admissible_commands}.values())
    if settings.max_states is not None and settings.max_states < len(states):
        states = random.Random(settings.seed).sample(states, settings.max_states)
    return states


def train_dpo(
    policy: str, pairs: str | Path, output_dir: str | Path, settings: DPOSettings, prompt: PromptConfig,
    *, device: str = "auto", resume: bool = True,
) -> Path:  # fmt: skip
    """Train ``policy`` by DPO on the pairs folder ``pairs``; save it to ``<output_dir>/model`` and return that path.

    Checkpoints, resume and a finished run returning at once work as in :func:`~prm_gym.policy.sft.train_sft`.

    Raises:
        FileNotFoundError: the pairs folder or the policy does not exist.
        ValueError: no pair; another run is writing output_dir; or its checkpoints were written with other
            settings or pairs (named).
    """
    from trl import DPOConfig  # TRL: only for this stage

    rows = read_jsonl(Path(pairs) / PAIRS_FILE)
    if not rows:
        raise ValueError(f"{pairs} holds no preference pair to train on.")
    record: dict[str, Any] = {
        "dpo": dataclasses.asdict(settings), "policy": policy, "prompt": dataclasses.asdict(prompt),
        "pairs_sha256": hashlib.sha256((Path(pairs) / PAIRS_FILE).read_bytes()).hexdigest(),
    }  # fmt: skip
    with lock_folder(output_dir, "DPO training") as out:
        if resume and finished_run(out, record, ignored=_NOT_COMPARED) is not None:
            logger.info("%s was trained by DPO with these settings and pairs already.", out / "model")
            return out / "model"
        checkpoint = checkpoint_to_resume(out, record, resume=resume, ignored=_NOT_COMPARED, run="DPO training",
                                          command="agentprm")  # fmt: skip
        torch_device = resolve_device(device)
        source = resolve_source(policy, dtype=torch.float32)
        tokenizer = load_pretrained(AutoTokenizer, source)
        ensure_pad_token(tokenizer)
        model = load_pretrained(AutoModelForCausalLM, source, dtype=torch.float32, use_safetensors=True)
        dataset = _dataset(rows, tokenizer, prompt)
        bf16 = bf16_is_native(torch_device)
        args = DPOConfig(
            output_dir=str(out), beta=settings.beta, learning_rate=settings.learning_rate,
            num_train_epochs=settings.num_train_epochs, max_steps=settings.max_steps,
            per_device_train_batch_size=settings.per_device_train_batch_size,
            gradient_accumulation_steps=settings.gradient_accumulation_steps, logging_steps=settings.logging_steps,
            save_strategy="steps", save_steps=settings.save_steps, save_total_limit=settings.save_total_limit,
            seed=settings.seed, bf16=bf16, use_cpu=torch_device.type == "cpu", report_to="none", max_length=None,
            precompute_ref_log_probs=True, activation_checkpointing=settings.activation_checkpointing,
        )  # fmt: skip
        trainer = _resumable_dpo_trainer()(
            model=model.to(torch_device), args=args, train_dataset=dataset, processing_class=tokenizer
        )
        atomic_write_text(out / RUN_CONFIG_FILE, json.dumps(record, indent=2) + "\n")
        if checkpoint is not None:
            logger.info("Resuming from %s (step %d).", checkpoint, checkpoint_step(checkpoint))
        logger.info("DPO on %d preference pairs.", len(rows))
        trainer.train(resume_from_checkpoint=checkpoint)
        record |= {"pairs": len(rows), "log_history": trainer.state.log_history}
        save_policy(trainer.model, tokenizer, out / "model", record)
    return out / "model"


def _dataset(rows: Sequence[dict[str, Any]], tokenizer: Any, prompt: PromptConfig) -> Any:
    """Return the pairs as TRL's text preference dataset: the rendered prompt, the chosen and rejected answers.

    An answer ends at the template's end-of-turn token, which is the tokenizer's eos for chat models: TRL then
    adds no eos of its own (the newline the template writes after it is left out of both answers).
    """
    from datasets import Dataset

    eos = tokenizer.eos_token or ""
    examples = []
    for row in rows:
        state = Context.from_dict(row["context"])
        chosen, rejected = (
            text.removesuffix("\n") if text.removesuffix("\n").endswith(eos) else text
            for text in answer_texts([row["chosen"], row["rejected"]], tokenizer, prompt)
        )
        examples.append({"prompt": render_text(state, tokenizer, prompt), "chosen": chosen, "rejected": rejected})
    return Dataset.from_list(examples)


def _resumable_dpo_trainer() -> type:
    """Return TRL's ``DPOTrainer`` with :class:`~prm_gym.training_runs.ResumableTrainer`'s resume and progress bar."""
    from trl import DPOTrainer

    return type("ResumableDPOTrainer", (ResumableTrainer, DPOTrainer), {})
