"""Supervised fine-tuning on demonstrations (pi0): answer-only labels, a policy that learns them, resume, the CLI."""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from conftest import command_logliks, tiny_llama  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import TrainingArguments  # noqa: E402

from prm_gym.agents import WalkthroughAgent  # noqa: E402
from prm_gym.agents.hf_agent import HFAgent  # noqa: E402
from prm_gym.agents.hf_config import HFAgentConfig  # noqa: E402
from prm_gym.cli import main  # noqa: E402
from prm_gym.policy import SFTConfig, sft, sft_examples, train_sft  # noqa: E402
from prm_gym.prm.prompt import PromptConfig  # noqa: E402
from prm_gym.rollout import CollectConfig, collect_rollouts, load_episodes  # noqa: E402


@pytest.fixture(scope="module")
def demonstrations(tmp_path_factory):
    """The gold walkthroughs of 2 tiny games, as `prm-gym collect --agent walkthrough` writes them."""
    config = CollectConfig(agent="walkthrough", split="tiny", num_games=2, repeats=1, num_envs=1, vectorization="sync",
                           output_dir=str(tmp_path_factory.mktemp("demos")))
    return collect_rollouts(WalkthroughAgent(), config, progress=False)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """A tiny random Llama causal LM with the shared SmolLM2 tokenizer, saved as a model directory."""
    model, tokenizer = tiny_llama("LlamaForCausalLM", seed=0)
    folder = tmp_path_factory.mktemp("base")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


#: Enough for a whole tiny walkthrough (no turn dropped): each episode is one example.
PROMPT_TOKENS = 1024


def config(demonstrations, base_model, output_dir, **overrides):
    settings = dict(demonstrations=str(demonstrations), model=str(base_model), output_dir=str(output_dir),
                    learning_rate=1e-2, per_device_train_batch_size=8, max_steps=12, logging_steps=3,
                    save_steps=6, device="cpu", max_prompt_tokens=PROMPT_TOKENS)
    return SFTConfig(**{**settings, **overrides})


def labelled_answers(example) -> list[list[int]]:
    """The labelled spans of an example (each a run of labels that are not -100), checked to be its input."""
    spans, span = [], []
    for token, label in zip(example["input_ids"], example["labels"], strict=True):
        if label == -100:
            spans, span = (spans + [span] if span else spans), []
        else:
            assert label == token
            span.append(label)
    return spans + [span] if span else spans


def test_each_episode_is_one_example_labelled_on_every_answer(demonstrations, base_model):
    tokenizer = HFAgent.from_pretrained(base_model, device="cpu").tokenizer
    episodes = load_episodes(demonstrations)
    examples = sft_examples(episodes, tokenizer, PromptConfig(max_prompt_tokens=PROMPT_TOKENS))
    assert len(examples) == len(episodes) == 2 and all(len(e.steps) > 2 for e in episodes)
    for example, episode in zip(examples, episodes, strict=True):
        answers = [tokenizer.decode(span) for span in labelled_answers(example)]
        assert answers == [f"ACTION: {action}<|im_end|>\n" for action in episode.actions]


def test_renders_that_do_not_extend_each_other_give_one_example_per_turn(demonstrations, base_model):
    tokenizer = HFAgent.from_pretrained(base_model, device="cpu").tokenizer
    episodes = load_episodes(demonstrations)
    listed = PromptConfig(max_prompt_tokens=PROMPT_TOKENS, show_admissible_commands=True)
    examples = sft_examples(episodes, tokenizer, listed)
    assert len(examples) == sum(len(e.steps) for e in episodes)
    actions = [action for episode in episodes for action in episode.actions]
    for example, action in zip(examples, actions, strict=True):
        (answer,) = labelled_answers(example)
        assert example["input_ids"][-len(answer) :] == answer  # the prompt alone is not learnt
        assert tokenizer.decode(answer) == f"ACTION: {action}<|im_end|>\n"


def test_the_whole_episode_example_has_the_per_turn_examples_loss(demonstrations, base_model):
    """One forward over an episode gives each answer token the log-probability its own turn's forward gives."""
    model, tokenizer = tiny_llama("LlamaForCausalLM", seed=1)
    episodes = load_episodes(demonstrations)
    whole = sft_examples(episodes, tokenizer, PromptConfig(max_prompt_tokens=PROMPT_TOKENS))
    per_turn = [
        {"input_ids": e["input_ids"][: end], "labels": [-100] * start + e["labels"][start:end]}
        for e in whole for start, end in answer_bounds(e["labels"])
    ]
    assert len(whole) == 2 and len(per_turn) == sum(len(e.steps) for e in episodes)

    def losses(examples):
        batch = sft._Collator(tokenizer.pad_token_id)(examples)
        keep = batch.pop("logits_to_keep")
        with torch.no_grad():
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        targets = batch["labels"][:, 1:]
        logprobs = torch.log_softmax(logits[:, :-1].float(), -1)
        picked = logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        assert keep[:, :-1].equal(targets != -100)
        return picked[targets != -100]

    torch.testing.assert_close(losses(whole), losses(per_turn), atol=1e-4, rtol=1e-4)
    # answer_loss (logits projected at the labelled positions only) is their mean.
    batch = sft._Collator(tokenizer.pad_token_id)(whole)
    labels = batch.pop("labels")
    with torch.no_grad():
        loss = sft.answer_loss(model(**batch), labels)
    torch.testing.assert_close(loss, -losses(whole).mean(), atol=1e-4, rtol=1e-4)


def answer_bounds(labels) -> list[tuple[int, int]]:
    """The (start, end) of each labelled span."""
    bounds, start = [], None
    for i, label in enumerate([*labels, -100]):
        if label != -100 and start is None:
            start = i
        elif label == -100 and start is not None:
            bounds, start = bounds + [(start, i)], None
    return bounds


def test_no_won_demonstration_is_one_clear_error(demonstrations):
    lost = [dataclasses.replace(e, steps=e.steps[:1]) for e in load_episodes(demonstrations)]  # cut before the win
    with pytest.raises(ValueError, match="None of the 2 demonstrations was won"):
        sft_examples(lost, None, PromptConfig())


def demonstrated_logliks(model_dir, episodes) -> tuple[float, float]:
    """The policy's mean log-likelihood of the demonstrator's commands, and of the other admissible ones, per turn
    (the loglik-mode scores of :class:`HFAgent`: the tokens SFT trains on)."""
    prompt = PromptConfig(max_prompt_tokens=PROMPT_TOKENS)
    agent = HFAgent.from_pretrained(model_dir, HFAgentConfig(mode="loglik", prompt=prompt), device="cpu",
                                    dtype="float32")
    shown, others = [], []
    for context in (step.context for episode in episodes for step in episode.steps):
        with torch.inference_mode():
            logliks = command_logliks(agent, context)
        for command, loglik in zip(context.admissible_commands, logliks, strict=True):
            (shown if command == context.action else others).append(loglik)
    return sum(shown) / len(shown), sum(others) / len(others)


def test_fine_tuning_teaches_the_demonstrations_and_a_killed_run_resumes(demonstrations, base_model, tmp_path,
                                                                          monkeypatch):
    episodes = load_episodes(demonstrations)
    shown_before, others_before = demonstrated_logliks(base_model, episodes)
    model_dir = train_sft(config(demonstrations, base_model, tmp_path / "run"))
    shown_after, others_after = demonstrated_logliks(model_dir, episodes)
    # The demonstrated commands became far likelier, and likelier than the other admissible commands.
    assert shown_after > shown_before + 20 and shown_after - others_after > shown_before - others_before
    record = json.loads((model_dir / "training.json").read_text())
    losses = [log["loss"] for log in record["log_history"] if "loss" in log]
    assert len(losses) == 4 and losses[-1] < losses[0] * 0.75
    assert record["examples"] == len(episodes)  # one per episode

    # A run killed right after its first checkpoint resumes from it and ends with the same weights.
    class KilledAfterFirstCheckpoint(sft.ResumableTrainer):
        def _save_checkpoint(self, *args, **kwargs):
            super()._save_checkpoint(*args, **kwargs)
            raise KeyboardInterrupt

    killed = tmp_path / "killed"
    with monkeypatch.context() as patch:
        patch.setattr(sft, "ResumableTrainer", KilledAfterFirstCheckpoint)
        with pytest.raises(KeyboardInterrupt):
            train_sft(config(demonstrations, base_model, killed))
    assert not (killed / "model").exists() and (killed / "checkpoint-6").is_dir()
    resumed = train_sft(config(demonstrations, base_model, killed))
    whole, again = load_file(model_dir / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert whole.keys() == again.keys()
    for name in whole:
        torch.testing.assert_close(again[name].float(), whole[name].float(), atol=2e-2, rtol=2e-2)


def test_a_finished_run_returns_at_once_and_other_settings_are_refused(demonstrations, base_model, tmp_path,
                                                                       monkeypatch):
    out = tmp_path / "run"
    model_dir = train_sft(config(demonstrations, base_model, out, max_steps=2, save_steps=2))

    def no_loading(*args, **kwargs):
        raise AssertionError("a finished run loaded a model")

    monkeypatch.setattr(sft, "load_pretrained", no_loading)
    assert train_sft(config(demonstrations, base_model, out, max_steps=2, save_steps=2)) == model_dir
    # how it runs is not what it learns: the same run with less memory or other checkpoints is the finished one
    assert train_sft(config(demonstrations, base_model, out, max_steps=2, save_steps=1,
                            activation_checkpointing=True)) == model_dir  # fmt: skip
    monkeypatch.undo()
    (model_dir / "training.json").unlink()  # as if not finished: the checkpoints decide
    with pytest.raises(ValueError, match=r"Cannot resume the fine-tuning .*sft.learning_rate: 0.01 there, 0.001 here"):
        train_sft(config(demonstrations, base_model, out, max_steps=2, save_steps=2, learning_rate=1e-3))


def test_cli_sft(demonstrations, base_model, tmp_path, capsys):
    args = ["sft", "--demonstrations", str(demonstrations), "--model", str(base_model), "--output-dir",
            str(tmp_path), "--max-steps", "1", "--device", "cpu", "--max-prompt-tokens", str(PROMPT_TOKENS)]
    assert main(args) == 0
    assert f"Fine-tuned policy saved to {tmp_path / 'model'}" in capsys.readouterr().out
    assert main([*args[:6], str(tmp_path / "lora"), *args[7:], "--lora", "--learning-rate", "1e-3"]) == 0
    merged = HFAgent.from_pretrained(tmp_path / "lora" / "model", device="cpu")  # adapters merged: a plain causal LM
    assert not any("lora" in name for name, _ in merged.model.named_parameters())
    assert main(["sft", "--demonstrations", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "o")]) == 2
    assert "prm-gym: error: No episodes at" in capsys.readouterr().err


def test_lora_saves_only_the_adapters_which_load_onto_the_base(demonstrations, base_model, tmp_path, monkeypatch):
    """With `lora`, the model folder is megabytes of adapters naming the base; loading merges them in."""
    peft = pytest.importorskip("peft")
    arguments = []  # with activation checkpointing, which must reach the trainer and still train the adapters
    monkeypatch.setattr(sft, "TrainingArguments", lambda **kw: arguments.append(kw) or TrainingArguments(**kw))
    model_dir = train_sft(config(demonstrations, base_model, tmp_path / "run", lora=True, max_steps=4, save_steps=4,
                                 activation_checkpointing=True))  # fmt: skip
    assert [kwargs["activation_checkpointing"] for kwargs in arguments] == [True]
    assert (model_dir / "adapter_model.safetensors").is_file() and not (model_dir / "model.safetensors").exists()
    adapters = json.loads((model_dir / "adapter_config.json").read_text())
    adapted = {name.rsplit(".", 1)[-1] for name in adapters["target_modules"]}
    assert adapted >= {"q_proj", "v_proj", "gate_proj", "down_proj"}  # every linear layer
    ids = torch.tensor([[1, 5, 9, 20, 33, 7]])

    def logits(model):
        with torch.no_grad():
            return model.float()(input_ids=ids).logits

    base = HFAgent.from_pretrained(base_model, device="cpu", dtype="float32").model
    expected = logits(peft.PeftModel.from_pretrained(base, model_dir))
    loaded = HFAgent.from_pretrained(model_dir, device="cpu", dtype="float32").model
    assert not any("lora" in name for name, _ in loaded.named_parameters())
    torch.testing.assert_close(logits(loaded), expected, atol=1e-4, rtol=1e-4)
    untrained = logits(HFAgent.from_pretrained(base_model, device="cpu", dtype="float32").model)
    assert (expected - untrained).abs().max() > 1e-3  # the adapters were trained: they change the model

    moved = tmp_path / "moved" / "a" / "run" / "model"  # the base is recorded relative to the adapters
    recorded = adapters["base_model_name_or_path"]
    assert not Path(recorded).is_absolute()
    moved_base = Path(os.path.normpath(moved / recorded))
    assert moved_base.is_relative_to(tmp_path / "moved")
    shutil.copytree(base_model, moved_base)
    shutil.copytree(model_dir, moved)
    shutil.rmtree(model_dir)
    torch.testing.assert_close(logits(HFAgent.from_pretrained(moved, dtype="float32").model), expected, atol=1e-4,
                               rtol=1e-4)  # fmt: skip
    shutil.rmtree(moved_base)
    with pytest.raises(FileNotFoundError, match="apply to the base model .*which does not exist"):
        HFAgent.from_pretrained(moved)
