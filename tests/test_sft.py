"""Supervised fine-tuning on demonstrations (pi0): answer-only labels, a policy that learns them, resume, the CLI."""

import dataclasses
import json

import pytest

torch = pytest.importorskip("torch")
from conftest import tiny_llama  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

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


#: A short prompt budget (older turns dropped) keeps each step cheap: the vocabulary's logits dominate.
PROMPT_TOKENS = 256


def config(demonstrations, base_model, output_dir, **overrides):
    settings = dict(demonstrations=str(demonstrations), model=str(base_model), output_dir=str(output_dir),
                    learning_rate=1e-2, per_device_train_batch_size=8, max_steps=12, logging_steps=3,
                    save_steps=6, device="cpu", max_prompt_tokens=PROMPT_TOKENS)
    return SFTConfig(**{**settings, **overrides})


def test_labels_are_the_answer_tokens_the_policy_scores(demonstrations, base_model):
    tokenizer = HFAgent.from_pretrained(base_model, device="cpu").tokenizer
    episodes = load_episodes(demonstrations)
    examples = sft_examples(episodes, tokenizer, PromptConfig(max_prompt_tokens=PROMPT_TOKENS))
    assert len(examples) == sum(len(e.steps) for e in episodes)
    actions = [action for episode in episodes for action in episode.actions]
    for example, action in zip(examples, actions, strict=True):
        answer = [token for token in example["labels"] if token != -100]
        prompt_length = len(example["labels"]) - len(answer)
        assert example["labels"][:prompt_length] == [-100] * prompt_length  # the prompt is not learnt
        assert example["input_ids"][prompt_length:] == answer
        assert tokenizer.decode(answer) == f"ACTION: {action}<|im_end|>\n"


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
            logliks = agent._command_logliks(dataclasses.replace(context, action=None, reason=None))
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
    assert record["examples"] == sum(len(e.steps) for e in episodes)

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
