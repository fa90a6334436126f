"""prm_gym.io: files the project writes always read back, and a killed writer never loses the old folder."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from prm_gym.io import (
    append_jsonl,
    atomic_directory,
    cache_root,
    config_differences,
    lock_folder,
    read_json_object,
    read_jsonl,
    recover_directory,
)


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])
def test_jsonl_rows_with_unicode_line_separators_read_back(tmp_path, separator):
    path = tmp_path / "rows.jsonl"
    rows = [{"reason": f"first{separator}second"}, {"reason": None}]
    append_jsonl(path, rows)
    assert separator in path.read_text(encoding="utf-8")  # written as it is, not escaped
    assert read_jsonl(path) == rows
    assert read_jsonl(path, repair=True) == rows


def test_a_jsonl_line_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(ValueError, match=r"^Line 2 of .*rows\.jsonl is not UTF-8 text"):
        read_jsonl(path, repair=True)


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"{bad", "is not valid JSON"), (b"[]", "holds a JSON list, not an object"), (b'{"a": "\xff"}', "not UTF-8")],
)
def test_a_damaged_json_object_file_is_named_with_the_remedy(tmp_path, content, problem):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"^{path}.*{problem}.*Use another folder.$"):
        read_json_object(path, "Use another folder.")


def test_config_differences_name_nested_settings_and_skip_ignored_ones():
    recorded = {"seed": 0, "device": "cpu", "hf": {"temperature": 0.0, "prompt": {"k": 1}}, "types": ["a"]}
    current = {"seed": 0, "device": "cuda", "hf": {"temperature": 0.7, "prompt": {"k": 2}}, "types": ("a",)}
    assert config_differences(recorded, current, ignored={"device", "hf.prompt.k"}) == [
        "hf.temperature: 0.0 there, 0.7 here"
    ]


def test_lock_folder_refuses_a_second_writer(tmp_path):
    with lock_folder(tmp_path / "run", "evaluation"):
        with pytest.raises(ValueError, match="run is being written by another evaluation"):
            with lock_folder(tmp_path / "run", "evaluation"):
                pass
    with lock_folder(tmp_path / "run", "evaluation"):  # released
        pass


def _make_folder(target: Path, text: str) -> None:
    target.mkdir(parents=True)
    (target / "file.txt").write_text(text)


def test_atomic_directory_replaces_a_folder_and_leaves_only_its_lock(tmp_path):
    target = tmp_path / "data"
    _make_folder(target, "old")
    with atomic_directory(target) as tmp:
        (tmp / "file.txt").write_text("new")
        assert (target / "file.txt").read_text() == "old"
    assert (target / "file.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_second_writer_of_the_same_target_waits_for_the_first(tmp_path, monkeypatch):
    import prm_gym.io as io

    target, trying, flock = tmp_path / "data", threading.Event(), fcntl.flock

    def flock_then_say_so(fd, operation):
        if threading.current_thread() is not threading.main_thread():
            trying.set()
        return flock(fd, operation)

    def second_writer():
        with atomic_directory(target) as tmp:
            (tmp / "file.txt").write_text("second")

    monkeypatch.setattr(io.fcntl, "flock", flock_then_say_so)
    thread = threading.Thread(target=second_writer)
    with atomic_directory(target) as tmp:
        (tmp / "file.txt").write_text("first")
        thread.start()
        trying.wait()
        assert [p.name for p in tmp_path.glob(".data.tmp-*")] == [tmp.name]  # the second waits: no folder of its own
    thread.join()
    assert (target / "file.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def _run_killed(code: str) -> None:
    """Run ``code`` in a Python subprocess that is expected to die of SIGKILL."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr


def test_a_writer_killed_in_its_block_leaves_the_old_folder_and_the_next_one_cleans_up(tmp_path):
    target = tmp_path / "data"
    _make_folder(target, "old")
    _run_killed(f"""
        import os, signal
        from prm_gym.io import atomic_directory
        with atomic_directory({str(target)!r}) as tmp:
            (tmp / "file.txt").write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert (target / "file.txt").read_text() == "old"
    assert len(list(tmp_path.glob(".data.tmp-*"))) == 1  # what the killed run left
    with atomic_directory(target) as tmp:
        (tmp / "file.txt").write_text("new")
    assert (target / "file.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_writer_killed_between_two_renames_gets_the_old_folder_back(tmp_path):
    """Where no atomic exchange exists: the old folder moves aside first; a kill then must not lose it."""
    target = tmp_path / "data"
    _make_folder(target, "old")
    _run_killed(f"""
        import os, signal
        import prm_gym.io as io
        io._exchange = lambda first, second: False
        replace = os.replace
        calls = []
        def replace_then_die(source, destination):
            calls.append(source)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            replace(source, destination)
        io.os.replace = replace_then_die
        with io.atomic_directory({str(target)!r}) as tmp:
            (tmp / "file.txt").write_text("new")
    """)
    assert not target.exists() and (tmp_path / ".data.old" / "file.txt").read_text() == "old"
    recover_directory(target)
    assert (target / "file.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_failed_second_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    import prm_gym.io as io

    target = tmp_path / "data"
    _make_folder(target, "old")
    monkeypatch.setattr(io, "_exchange", lambda first, second: False)
    replace, calls = os.replace, []

    def failing_replace(source, destination):
        calls.append(source)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        replace(source, destination)

    monkeypatch.setattr(io.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        with atomic_directory(target) as tmp:
            (tmp / "file.txt").write_text("new")
    assert (target / "file.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_recover_directory_leaves_a_folder_being_written_alone(tmp_path):
    target = tmp_path / "data"
    with atomic_directory(target) as tmp:
        recover_directory(target)  # its lock is held: the temporary folder is in use
        assert tmp.is_dir()
        (tmp / "rows.json").write_text(json.dumps([1]))
    assert json.loads((target / "rows.json").read_text()) == [1]


def test_one_cache_root_holds_games_converted_models_and_fetched_files(tmp_path, monkeypatch):
    from prm_gym.checkpoints import default_cache_dir
    from prm_gym.envs.alfworld.data import default_data_dir
    from prm_gym.known_files import known_files_dir

    def folders() -> list[Path]:
        return [default_data_dir().parent, default_cache_dir().parent, known_files_dir().parent, cache_root()]

    monkeypatch.delenv("PRM_GYM_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert folders() == [tmp_path / "home" / ".cache" / "prm_gym"] * 4
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert folders() == [tmp_path / "xdg" / "prm_gym"] * 4
    monkeypatch.setenv("PRM_GYM_CACHE", str(tmp_path / "mine"))  # wins over both
    assert folders() == [tmp_path / "mine"] * 4
