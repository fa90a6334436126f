"""ProcessRewardModel on tiny random models with the shared SmolLM2 tokenizer (and once on the real GGUF model)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import SHARED_GGUF, SHARED_TOKENIZER, tiny_llama, tiny_prm  # noqa: E402

from prm_gym import checkpoints  # noqa: E402
from prm_gym.devices import bf16_is_native, resolve_device, resolve_dtype  # noqa: E402
from prm_gym.prm import Context, LoraSettings, ProcessRewardModel, PromptConfig  # noqa: E402
from prm_gym.prm.model import SETTINGS_FILE  # noqa: E402

TOKENIZER_DIR, GGUF = SHARED_TOKENIZER, SHARED_GGUF


@pytest.fixture(scope="module")
def tokenizer_dir() -> Path:
    if not TOKENIZER_DIR.is_dir():
        pytest.skip(f"the shared tokenizer is missing at {TOKENIZER_DIR}")
    return TOKENIZER_DIR


def tokenizer(tokenizer_dir: Path):
    return transformers.AutoTokenizer.from_pretrained(tokenizer_dir)


def contexts() -> list[Context]:
    """Proposals at states of increasing history length, interleaved so that lengths are mixed."""
    state = Context(
        task="put a clean mug in coffeemachine.",
        observation="You are in the middle of a room. Looking quickly around you, you see a sinkbasin 1.",
        admissible_commands=("go to sinkbasin 1", "go to countertop 1", "look", "inventory"),
    )
    states = [state]
    for turn in range(5):
        states.append(
            states[-1]
            .propose(f"go to countertop {turn + 1}")
            .advance(f"You arrive at countertop {turn + 1}. On it, you see a mug {turn}.", {"admissible_commands": []})
        )
    proposals = [s.propose(a, reason="It may help.") for s in states for a in ("look", "go to sinkbasin 1")]
    return proposals[::2] + proposals[1::2]


@pytest.fixture(scope="module")
def llama32(tokenizer_dir: Path) -> ProcessRewardModel:
    return tiny_prm()


def test_scores_are_probabilities_in_input_order(llama32: ProcessRewardModel) -> None:
    scores = llama32.score(contexts())
    assert len(scores) == len(contexts())
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
    assert len(set(scores)) > 1
    assert llama32.score([]) == []


def test_batched_scores_close_to_one_at_a_time_in_float32(llama32: ProcessRewardModel) -> None:
    # Not bit-exact: a padded batch and a single row take other matmul paths (AMX, blocking) on some CPUs.
    batched = llama32.score(contexts())
    single = [llama32.score([c])[0] for c in contexts()]
    assert batched == pytest.approx(single, abs=1e-6)


def test_batched_scores_close_to_one_at_a_time_in_bf16(tokenizer_dir: Path) -> None:
    prm = tiny_prm(dtype=torch.bfloat16)
    batched = prm.score(contexts())
    single = [prm.score([c])[0] for c in contexts()]
    assert batched == pytest.approx(single, abs=2e-2)


def test_dynamic_batching_keeps_input_order(llama32: ProcessRewardModel, tokenizer_dir: Path) -> None:
    small = tiny_prm(max_batch_tokens=600, shared_prefix=False)  # a few rows per batch of full forwards
    calls = []
    small.model.register_forward_hook(lambda module, args, kwargs_out: calls.append(1))
    scores = small.score(contexts())
    assert len(calls) > 2
    assert scores == pytest.approx(llama32.score(contexts()), abs=1e-6)
    reversed_scores = small.score(contexts()[::-1])
    assert reversed_scores[::-1] == pytest.approx(scores, abs=1e-6)


def test_padding_side_does_not_change_scores(llama32: ProcessRewardModel) -> None:
    right = llama32.score(contexts())
    llama32.tokenizer.padding_side = "left"
    try:
        assert llama32.score(contexts()) == pytest.approx(right, abs=1e-6)
        # A left-padded batch from elsewhere (e.g. a collator) is read at the last real token too.
        batch = llama32.encode(contexts())
        lengths = batch["attention_mask"].sum(-1).tolist()
        unpadded = [ids[:n] for ids, n in zip(batch["input_ids"].tolist(), lengths, strict=True)]
        left = llama32.tokenizer.pad({"input_ids": unpadded}, return_tensors="pt")
        assert left["attention_mask"][:, 0].tolist().count(0) > 0  # really left-padded
        with torch.inference_mode():
            logits = llama32.logits(left)
        assert torch.sigmoid(logits).tolist() == pytest.approx(right, abs=1e-4)
    finally:
        llama32.tokenizer.padding_side = "right"


def test_logits_carry_gradients_for_training(llama32: ProcessRewardModel) -> None:
    batch = llama32.encode(contexts()[:3])
    assert batch["input_ids"].shape[0] == 3
    logits = llama32.logits(batch)
    assert logits.shape == (3,) and logits.dtype == torch.float32 and logits.requires_grad
    logits.sum().backward()
    assert llama32.model.score.weight.grad is not None
    llama32.model.zero_grad()


def test_save_and_load_round_trip(llama32: ProcessRewardModel, tokenizer_dir: Path, tmp_path: Path) -> None:
    prompt = PromptConfig(max_prompt_tokens=300, show_reason=False)
    prm = tiny_prm(prompt_config=prompt, max_batch_tokens=1000)
    target = tmp_path / "prm"
    prm.save_pretrained(target)
    prm.save_pretrained(target)  # overwriting goes through the same rename
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prm"]
    assert (target / "model.safetensors").is_file() and not list(target.glob("*.bin"))
    assert json.loads((target / SETTINGS_FILE).read_text())["prompt_config"]["max_prompt_tokens"] == 300
    loaded = ProcessRewardModel.from_pretrained(target, device="cpu", dtype="float32")
    assert loaded.prompt_config == prompt and loaded.max_batch_tokens == 1000
    assert loaded.device == torch.device("cpu")
    assert loaded.score(contexts()) == pytest.approx(prm.score(contexts()), abs=1e-6)


def test_plain_causal_lm_directory_gets_a_fresh_head(tokenizer_dir: Path, tmp_path: Path) -> None:
    model, tok = tiny_llama("LlamaForCausalLM")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    prm = ProcessRewardModel.from_pretrained(tmp_path, device="cpu", dtype="bf16")
    assert prm.model.config.num_labels == 1 and prm.model.dtype == torch.bfloat16
    assert prm.prompt_config == PromptConfig()
    assert all(0.0 <= s <= 1.0 for s in prm.score(contexts()[:2]))


def test_classifier_directory_with_other_labels_gets_a_one_logit_head(tokenizer_dir: Path, tmp_path: Path) -> None:
    tok = tokenizer(tokenizer_dir)
    config = transformers.BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    transformers.BertForSequenceClassification(config).save_pretrained(tmp_path)  # two labels
    tok.save_pretrained(tmp_path)
    prm = ProcessRewardModel.from_pretrained(tmp_path, device="cpu", dtype="fp32")
    assert prm.model.classifier.out_features == 1
    assert all(0.0 <= s <= 1.0 for s in prm.score(contexts()[:2]))


def test_context_without_action_raises(llama32: ProcessRewardModel) -> None:
    state = Context(task="look", observation="You are in a room.")
    with pytest.raises(ValueError, match=r"contexts\[1\] proposes no action"):
        llama32.score([state.propose("look"), state])
    with pytest.raises(TypeError, match="should be a prm_gym Context"):
        llama32.score(["look"])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("device", "match"),
    [
        ("gpu", "Unknown device 'gpu'"),
        ("tpu:0", "Unknown device"),
        ("cuda:7", "'cuda:7' is not available"),
        ("meta", "'meta' is not available"),
    ],
)
def test_wrong_device_raises(device: str, match: str, tokenizer_dir: Path) -> None:
    with pytest.raises(ValueError, match=match):
        resolve_device(device)
    with pytest.raises(ValueError, match=match):
        ProcessRewardModel.from_pretrained(tokenizer_dir, device=device)


def test_dtypes() -> None:
    assert resolve_dtype("auto", "cpu") == (torch.bfloat16 if bf16_is_native("cpu") else torch.float32)
    assert resolve_dtype("bf16") == resolve_dtype("bfloat16") == resolve_dtype(torch.bfloat16) == torch.bfloat16
    assert resolve_dtype("FP32") == torch.float32 and resolve_dtype("fp16") == torch.float16
    with pytest.raises(ValueError, match="Unknown dtype 'int8'"):
        resolve_dtype("int8")
    with pytest.raises(ValueError, match="floating-point"):
        resolve_dtype(torch.int64)


@pytest.mark.parametrize(("native", "expected"), [(True, "bfloat16"), (False, "float32")])
def test_auto_dtype_follows_the_cpus_bf16(
    native: bool, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # AVX2-only CPUs emulate bf16 (4-6x slower than float32 here); AVX-512 / AMX ones run it natively.
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    assert bf16_is_native("cpu") is native
    assert resolve_dtype("auto", "cpu") == getattr(torch, expected)
    assert not bf16_is_native("meta")


def test_loading_errors_are_clear(tokenizer_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match="No model directory or .gguf file"):
        ProcessRewardModel.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="No GGUF file"):
        ProcessRewardModel.from_pretrained(tmp_path / "missing.gguf")
    with pytest.raises(ValueError, match="holds no .safetensors weights"):
        ProcessRewardModel.from_pretrained(tokenizer_dir)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="Pass a local model directory or a .gguf file"):
        ProcessRewardModel.from_pretrained("no-such-org/no-such-model-prm-gym")


def test_model_without_one_logit_head_raises(tokenizer_dir: Path) -> None:
    model, tok = tiny_llama("LlamaForSequenceClassification")  # two labels, transformers' default
    with pytest.raises(ValueError, match="num_labels=1"):
        ProcessRewardModel(model, tok)


def test_encoder_backbone(tokenizer_dir: Path) -> None:
    tok = tokenizer(tokenizer_dir)
    config = transformers.BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
    )
    torch.manual_seed(0)
    prm = ProcessRewardModel(transformers.BertForSequenceClassification(config).eval(), tok)
    scores = prm.score(contexts())
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores == pytest.approx([prm.score([c])[0] for c in contexts()], abs=1e-5)


@pytest.mark.parametrize("use_peft_config", [False, True])
def test_lora_trains_adapters_and_head_only(use_peft_config: bool, tokenizer_dir: Path, tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]) if use_peft_config else None
    prm = tiny_prm(lora=lora or LoraSettings(r=4, alpha=8))
    assert isinstance(prm.model, peft.PeftModel)
    trainable = [name for name, p in prm.model.named_parameters() if p.requires_grad]
    assert any("lora_" in name for name in trainable) and any("score" in name for name in trainable)
    assert all("lora_" in name or "score" in name for name in trainable)
    scores = prm.score(contexts())
    assert all(0.0 <= s <= 1.0 for s in scores)
    prm.save_pretrained(tmp_path / "merged")
    loaded = ProcessRewardModel.from_pretrained(tmp_path / "merged", device="cpu", dtype="fp32")
    assert not isinstance(loaded.model, peft.PeftModel)
    assert loaded.score(contexts()) == pytest.approx(scores, abs=1e-5)


def test_gguf_converts_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not GGUF.is_file():
        pytest.skip(f"the shared GGUF model is missing at {GGUF}")
    # Every GGUF dequantisation goes through `checkpoints.AutoModelForCausalLM.from_pretrained(..., gguf_file=)`.
    dequantised = []
    causal_lm = checkpoints.AutoModelForCausalLM

    class Spy:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            dequantised.append(kwargs.get("gguf_file"))
            return causal_lm.from_pretrained(*args, **kwargs)

    monkeypatch.setattr(checkpoints, "AutoModelForCausalLM", Spy)
    pairs = [c for c in contexts() if not c.history][:2]
    torch.manual_seed(0)  # the fresh score head
    first = ProcessRewardModel.from_pretrained(GGUF, device="cpu", dtype="bf16", cache_dir=tmp_path)
    assert dequantised == [GGUF.name]
    scores = first.score(pairs)
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
    (cached,) = tmp_path.iterdir()
    assert cached.name.endswith("-bfloat16") and (cached / "model.safetensors").is_file()
    written = {path: path.stat().st_mtime_ns for path in cached.iterdir()}
    torch.manual_seed(0)
    second = ProcessRewardModel.from_pretrained(
        GGUF.parent, gguf_file=GGUF.name, device="cpu", dtype="bf16", cache_dir=tmp_path
    )
    assert dequantised == [GGUF.name]  # the second load read the cached safetensors: no conversion
    assert {path: path.stat().st_mtime_ns for path in cached.iterdir()} == written  # nor a rewrite
    assert second.score(pairs) == pytest.approx(scores, abs=1e-4)


def test_lora_adapters_saved_alone_load_onto_their_base(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`save_pretrained(lora_base=...)` writes only the adapters and the score head; loading them scores the same."""
    peft = pytest.importorskip("peft")
    model, tok = tiny_llama("LlamaForCausalLM", seed=1)
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    prm = ProcessRewardModel.from_pretrained(tmp_path / "base", device="cpu", dtype="fp32",
                                             lora=LoraSettings(r=4, alpha=8, dropout=0.0))  # fmt: skip
    with torch.no_grad():  # trained adapters and head: not their initial values, which would change nothing
        for name, param in prm.model.named_parameters():
            if "lora_B" in name or "score" in name:
                param.add_(torch.randn_like(param) * 0.5)
    scores = prm.score(contexts())
    prm.save_pretrained(tmp_path / "q0", lora_base=tmp_path / "base")
    assert (tmp_path / "q0" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "q0" / "model.safetensors").exists()
    caplog.clear()  # the base loaded with a new head above: transformers rightly said so
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = ProcessRewardModel.from_pretrained(tmp_path / "q0", device="cpu", dtype="fp32")
    said = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [m for m in said if "MISSING" in m or "newly initialized" in m]  # the head comes with the adapters
    assert not isinstance(loaded.model, peft.PeftModel)
    assert loaded.score(contexts()) == pytest.approx(scores, abs=1e-5)
    with pytest.raises(ValueError, match="`lora_base` saves LoRA adapters, but this reward model has none"):
        loaded.save_pretrained(tmp_path / "again", lora_base=tmp_path / "base")
