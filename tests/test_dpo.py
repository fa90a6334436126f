"""DPO against a PRM: pairs from the policy's samples ranked by the PRM, and a DPO step that prefers the chosen."""

import dataclasses
import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
from conftest import command_logliks, tiny_llama  # noqa: E402

from prm_gym.agents.base import Agent, Decision  # noqa: E402
from prm_gym.agents.hf_agent import HFAgent  # noqa: E402
from prm_gym.agents.hf_config import HFAgentConfig  # noqa: E402
from prm_gym.policy.dpo import PAIRS_FILE, policy_preferences, sample_states, save_pairs, train_dpo  # noqa: E402
from prm_gym.policy.dpo_config import DPOSettings  # noqa: E402
from prm_gym.prm import Context, PromptConfig  # noqa: E402

COMMANDS = ("go to desk 1", "go to sink 1", "look", "take mug 1 from desk 1")
STATES = [Context(task="put a mug in the sink.", observation=f"You are in room {i}.", admissible_commands=COMMANDS)
          for i in range(6)]  # fmt: skip


class Cycling(Agent):
    """Samples the commands in turn (state i: commands i, i+1, ...)."""

    def decide(self, contexts):
        raise NotImplementedError

    def sample(self, contexts, n):
        return [[Decision(COMMANDS[(int(c.observation[-2]) + k) % len(COMMANDS)]) for k in range(n)] for c in contexts]


class LikesTake:
    """Scores `take` highest, `look` lowest."""

    def score(self, contexts):
        return [{"take": 0.9, "go": 0.5, "look": 0.45}[c.action.split()[0]] for c in contexts]


def test_pairs_are_the_prms_best_and_worst_of_the_policys_samples():
    pairs = policy_preferences(STATES, Cycling(), LikesTake(), DPOSettings(candidates=2, min_gap=0.1))
    # State i samples commands i and i+1 (mod 4): (desk, sink) tie; (sink, look) gap 0.05 < 0.1; (look, take);
    # (take, desk); then (desk, sink) and (sink, look) again.
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [
        ("take mug 1 from desk 1", "look"), ("take mug 1 from desk 1", "go to desk 1"),
    ]  # fmt: skip
    assert all(p["chosen_score"] - p["rejected_score"] >= 0.1 for p in pairs)
    assert Context.from_dict(pairs[0]["context"]) == STATES[2]
    assert len(sample_states(STATES + STATES, DPOSettings(max_states=4))) == 4  # distinct states, seeded sample
    with pytest.raises(ValueError, match="No preference pair"):
        save_pairs([], "unused", {})


def test_dpo_makes_the_chosen_commands_likelier_than_the_rejected(tmp_path):
    model, tokenizer = tiny_llama("LlamaForCausalLM", seed=0)
    model.save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    pairs = policy_preferences(STATES, Cycling(), LikesTake(), DPOSettings(candidates=4, min_gap=0.1))
    assert len(pairs) == len(STATES) and {p["chosen"] for p in pairs} == {"take mug 1 from desk 1"}
    folder = save_pairs(pairs, tmp_path / "pairs", {"test": True})
    prompt = PromptConfig(max_prompt_tokens=512)

    def margin(policy_dir):
        agent = HFAgent.from_pretrained(policy_dir, HFAgentConfig(mode="loglik", prompt=prompt), device="cpu",
                                        dtype="float32")  # fmt: skip
        with torch.inference_mode():
            logliks = [dict(zip(COMMANDS, command_logliks(agent, state), strict=True)) for state in STATES]
        return sum(ll["take mug 1 from desk 1"] - ll["look"] for ll in logliks) / len(logliks)

    settings = DPOSettings(learning_rate=1e-2, max_steps=3, per_device_train_batch_size=6, save_steps=3, beta=0.1,
                           logging_steps=1)
    trained = train_dpo(str(tmp_path / "policy"), folder, tmp_path / "run", settings, prompt, device="cpu")
    assert margin(trained) > margin(tmp_path / "policy") + 1.0
    record = json.loads((trained / "training.json").read_text())
    assert record["pairs"] == len(pairs) and record["dpo"]["beta"] == 0.1
    assert any("loss" in log for log in record["log_history"])
    # A rerun returns the trained model at once; other settings against its checkpoints are refused.
    assert train_dpo(str(tmp_path / "policy"), folder, tmp_path / "run", settings, prompt, device="cpu") == trained
    (trained / "training.json").unlink()
    with pytest.raises(ValueError, match=r"dpo.beta: 0.1 there, 0.2 here"):
        train_dpo(str(tmp_path / "policy"), folder, tmp_path / "run", dataclasses.replace(settings, beta=0.2), prompt,
                  device="cpu")  # fmt: skip
    assert (tmp_path / "pairs" / PAIRS_FILE).is_file()


def test_activation_checkpointing_gives_the_same_first_step(tmp_path, monkeypatch):
    """Recomputing each layer in the backward (`activation_checkpointing`) changes memory, not the DPO step."""
    import transformers.modeling_utils

    recomputed = []  # the layers run under torch's checkpoint (the function transformers wraps each layer in)
    checkpoint = transformers.modeling_utils.checkpoint
    monkeypatch.setattr(transformers.modeling_utils, "checkpoint",
                        lambda *args, **kwargs: recomputed.append(1) or checkpoint(*args, **kwargs))  # fmt: skip
    model, tokenizer = tiny_llama("LlamaForCausalLM", seed=0)
    model.save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    pairs = policy_preferences(STATES, Cycling(), LikesTake(), DPOSettings(candidates=4, min_gap=0.1))
    folder = save_pairs(pairs, tmp_path / "pairs", {"test": True})
    prompt = PromptConfig(max_prompt_tokens=512)
    firsts = []
    for checkpointing in (False, True):
        settings = DPOSettings(learning_rate=1e-3, max_steps=1, per_device_train_batch_size=6, save_steps=1,
                               logging_steps=1, activation_checkpointing=checkpointing)  # fmt: skip
        trained = train_dpo(str(tmp_path / "policy"), folder, tmp_path / f"run-{checkpointing}", settings, prompt,
                            device="cpu")  # fmt: skip
        logs = json.loads((trained / "training.json").read_text())["log_history"]
        firsts.append(next(log for log in logs if "loss" in log))
        assert bool(recomputed) == checkpointing
    plain, checkpointed = firsts
    assert checkpointed["loss"] == pytest.approx(plain["loss"], rel=1e-2)
    assert checkpointed["grad_norm"] == pytest.approx(plain["grad_norm"], rel=5e-2)
    assert plain["grad_norm"] > 0
