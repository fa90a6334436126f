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


def test_adapters_on_two_different_local_bases_are_not_copies(tmp_path):
    for name, weights in (("a.bin", b"base a"), ("b.bin", b"base b")):
        (tmp_path / name).write_bytes(weights)
    on_a = adapters(tmp_path / "on-a", b"lora", "../a.bin")
    on_b = adapters(tmp_path / "on-b", b"lora", "../b.bin")
    also_on_a = adapters(tmp_path / "deeper" / "on-a", b"lora", "../../a.bin")
    assert canonical_model_paths([on_a, on_b, also_on_a]) == {also_on_a: on_a}
    with pytest.raises(FileNotFoundError, match="No model at"):
        model_fingerprint(tmp_path / "missing")
