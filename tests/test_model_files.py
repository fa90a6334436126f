"""Damaged model files give one clear error naming the file and what to do, from the API and from the CLI.

A corrupt ``config.json``, a junk or truncated ``.safetensors`` file, a truncated ``.gguf`` file, and a damaged
converted-GGUF cache folder, for both ``--reward-model`` (ProcessRewardModel) and ``--model`` (HFAgent).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from conftest import SHARED_GGUF, SHARED_TOKENIZER, tiny_llama  # noqa: E402

from prm_gym import checkpoints  # noqa: E402
from prm_gym.cli import main  # noqa: E402
from prm_gym.devices import resolve_dtype  # noqa: E402

pytestmark = pytest.mark.skipif(not SHARED_TOKENIZER.is_dir(), reason=f"no shared tokenizer at {SHARED_TOKENIZER}")

#: How the two model-loading agents name a model on the command line.
AGENTS = {
    "reward-model": ["--agent", "best-of-n", "--reward-model"],
    "policy": ["--agent", "hf", "--model"],
}


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The converted-GGUF cache, in a temporary folder."""
    monkeypatch.setenv("PRM_GYM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "cache" / "models"


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny causal LM saved as a Hugging Face directory (safetensors, config.json, tokenizer)."""
    model, tokenizer = tiny_llama("LlamaForCausalLM")
    folder = tmp_path_factory.mktemp("saved") / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def copy_of(saved: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    for path in saved.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def cli_error(capsys: pytest.CaptureFixture[str], agent: str, path: Path) -> str:
    """Run ``prm-gym eval`` with the model at ``path``; return its one error line (exit status 2 checked)."""
    argv = ["eval", *AGENTS[agent], str(path), "--split", "tiny", "--num-games", "1", "--device", "cpu"]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) >= 1 and lines[-1].startswith("prm-gym: error: "), lines
    return lines[-1]


def corrupt_config(folder: Path) -> Path:
    (folder / "config.json").write_text('{"model_type": "llama", "hidden', encoding="utf-8")
    return folder / "config.json"


def junk_weights(folder: Path) -> Path:
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 20)
    return folder / "model.safetensors"


def truncated_weights(folder: Path) -> Path:
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    return weights


@pytest.mark.parametrize("agent", AGENTS)
@pytest.mark.parametrize("damage", [corrupt_config, junk_weights, truncated_weights])
def test_a_damaged_model_folder_is_named_in_one_line(saved, tmp_path, capsys, agent, damage):
    damaged = damage(copy_of(saved, tmp_path))
    error = cli_error(capsys, agent, tmp_path / "model")
    assert f"Cannot load {str(damaged)!r}" in error and "Download or save the model again." in error


@pytest.mark.parametrize("agent", AGENTS)
def test_a_damaged_tokenizer_is_one_line_too(saved, tmp_path, capsys, agent):
    folder = copy_of(saved, tmp_path)
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {', encoding="utf-8")
    error = cli_error(capsys, agent, folder)
    assert f"Cannot load the tokenizer in {str(folder)!r}" in error and "download it again" in error


@pytest.mark.parametrize("agent", AGENTS)
@pytest.mark.parametrize("size", [1_000, 3_000_000])  # cut in the header, then in the tensors
def test_a_truncated_gguf_file_is_named_and_leaves_no_cache(tmp_path, cache, capsys, agent, size):
    if not SHARED_GGUF.is_file():
        pytest.skip(f"no shared GGUF at {SHARED_GGUF}")
    gguf = tmp_path / "model.gguf"
    with SHARED_GGUF.open("rb") as f:
        gguf.write_bytes(f.read(size))
    error = cli_error(capsys, agent, gguf)
    assert f"Cannot read the GGUF file {str(gguf)!r}" in error and "Download it again" in error
    assert not cache.exists() or not [p for p in cache.iterdir() if p.is_dir()]  # nothing half-converted left


def converted_folder(gguf: Path, cache: Path) -> Path:
    """Where the conversion of ``gguf`` to the CPU's "auto" dtype (bfloat16 where native, else float32) is cached."""
    dtype = str(resolve_dtype("auto", "cpu")).removeprefix("torch.")
    return cache / f"{hashlib.sha256(gguf.read_bytes()).hexdigest()[:16]}-{dtype}"


@pytest.mark.parametrize("agent", AGENTS)
def test_a_damaged_conversion_in_the_cache_says_to_delete_it(saved, tmp_path, cache, capsys, agent):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF stand-in: only its hash matters once its conversion is cached")
    folder = converted_folder(gguf, cache)
    folder.parent.mkdir(parents=True)
    copy_of(saved, tmp_path).rename(folder)
    (folder / checkpoints.CONVERTED_FROM).write_text(json.dumps({"gguf": str(gguf)}), encoding="utf-8")
    truncated_weights(folder)
    error = cli_error(capsys, agent, gguf)
    assert f"Cannot load {str(folder / 'model.safetensors')!r}" in error
    assert f"{str(folder)!r} is prm_gym's conversion of a GGUF file: delete that folder" in error


class FakeLoaded:
    """Stands in for a dequantised model or tokenizer: saving writes one file, or fails half-way."""

    fail_saving = False

    def __init__(self):
        self.config = SimpleNamespace(quantization_config=None)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        return cls()

    def save_pretrained(self, folder):
        (Path(folder) / f"{type(self).__name__}.safetensors").write_bytes(b"weights")
        if self.fail_saving:
            raise OSError("No space left on device")


def test_the_gguf_conversion_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF stand-in")
    monkeypatch.setattr(checkpoints, "AutoModelForCausalLM", FakeLoaded)
    monkeypatch.setattr(checkpoints, "AutoTokenizer", FakeLoaded)
    monkeypatch.setattr(FakeLoaded, "fail_saving", True)
    cache = tmp_path / "cache"
    with pytest.raises(OSError, match="No space left"):
        checkpoints.resolve_source(gguf, dtype=torch.bfloat16, cache_dir=cache)
    folders = [p.name for p in cache.iterdir() if p.is_dir()]
    assert folders == []  # no half-written folder, no temporary one left behind
    monkeypatch.setattr(FakeLoaded, "fail_saving", False)
    folder = Path(checkpoints.resolve_source(gguf, dtype=torch.bfloat16, cache_dir=cache))
    assert [p.name for p in cache.iterdir() if p.is_dir()] == [folder.name]
    assert json.loads((folder / checkpoints.CONVERTED_FROM).read_text()) == {"gguf": str(gguf.resolve())}
