"""Copies of one model at several paths are found as copies; other models, missing paths and hub ids are not."""

import json

import pytest

from prm_gym.model_copies import canonical_model_paths, model_fingerprint


def adapters(folder, weights, base):
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(weights)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": 16}))
    return str(folder)


def test_adapters_on_the_known_base_are_copies_wherever_its_path_points(tmp_path):
    """The shared GGUF is fetched where missing, so two relative paths to it name one base, present or not."""
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    trained = adapters(tmp_path / "runs" / "q0" / "model", b"lora", f"../../../../shared/{name}")
    shipped = adapters(tmp_path / "benchmarks" / "x" / "q0" / "model", b"lora", f"../../../../../shared/{name}")
    retrained = adapters(tmp_path / "runs" / "q1" / "model", b"LORA", f"../../../../shared/{name}")
    assert canonical_model_paths([trained, shipped, retrained, "HuggingFaceTB/SmolLM2-135M", "gone/model"]) == {
        shipped: trained
    }
    assert model_fingerprint(trained) == model_fingerprint(shipped) != model_fingerprint(retrained)


def test_adapters_on_adapters_are_copies_when_their_bases_are_copies(tmp_path):
    """pi1's adapters name pi0's folder: pi1 shipped beside a copy of pi0 is pi1 still; pi1 on other pi0 is not."""
    base = "SmolLM2-135M-Instruct.Q4_1.gguf"
    adapters(tmp_path / "runs" / "pi0", b"pi0", f"../../{base}")
    adapters(tmp_path / "bench" / "x" / "pi0", b"pi0", f"../../../{base}")
    adapters(tmp_path / "runs" / "other", b"PI0", f"../../{base}")
    pi1 = adapters(tmp_path / "runs" / "pi1", b"pi1", "../pi0")
    pi1_shipped = adapters(tmp_path / "bench" / "x" / "pi1", b"pi1", "../pi0")
    pi1_on_other = adapters(tmp_path / "runs" / "pi1-other", b"pi1", "../other")
    assert canonical_model_paths([pi1, pi1_shipped, pi1_on_other]) == {pi1_shipped: pi1}
    assert model_fingerprint(adapters(tmp_path / "itself", b"x", "."))  # a base naming itself ends the chain
    with pytest.raises(FileNotFoundError, match="No model at"):
        model_fingerprint(tmp_path / "missing")
