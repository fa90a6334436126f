import io
import json
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
from conftest import SHARED_ARCHIVE

from prm_gym.cli import main
from prm_gym.envs.alfworld import data
from prm_gym.envs.alfworld.data import (
    SPLITS,
    DataNotFoundError,
    find_data_dir,
    list_games,
    prepare_data,
    resolve_split,
)
from prm_gym.envs.alfworld.tasks import TASK_TYPES, parse_task_types, task_type_of_game_dir


@pytest.mark.parametrize("split", ["train", "valid_seen", "valid_unseen", "valid_train"])
def test_split_sizes_match_alfworld(alfworld_data_dir, split):
    assert len(list_games(split, data_dir=alfworld_data_dir)) == SPLITS[split]


def test_aliases_name_the_same_games(alfworld_data_dir):
    assert list_games("eval_out_of_distribution") == list_games("valid_unseen")
    assert list_games("eval_in_distribution") == list_games("valid_seen")


def test_valid_unseen_task_type_counts(alfworld_data_dir):
    counts = {t.label: len(list_games("valid_unseen", task_types=t.id)) for t in TASK_TYPES.values()}
    assert counts == {"Pick": 24, "Look": 18, "Clean": 31, "Heat": 23, "Cool": 21, "Pick2": 17}


def test_folder_task_type_agrees_with_traj_data(alfworld_data_dir):
    for game in list_games("valid_seen"):
        traj = json.loads((game.parent / "traj_data.json").read_text())
        assert task_type_of_game_dir(game.parent.parent.name).name == traj["task_type"]


def test_unknown_split_names_the_split():
    with pytest.raises(ValueError, match="Unknown ALFWorld split 'validation'.*valid_unseen"):
        resolve_split("validation")


@pytest.mark.parametrize("bad", ["pick_and_fly", 7, "0"])
def test_unknown_task_type_names_the_value(bad):
    with pytest.raises(ValueError, match=f"Unknown ALFWorld task type {bad!r}"):
        parse_task_types([bad])


def test_empty_task_types_is_an_error():
    with pytest.raises(ValueError, match="`task_types` is empty"):
        parse_task_types([])


def test_missing_data_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    monkeypatch.setenv("PRM_GYM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError, match="prm-gym data"):
        find_data_dir()
    with pytest.raises(DataNotFoundError, match="prm-gym data"):
        list_games("valid_unseen")


def test_data_dir_argument_wins_over_environment(alfworld_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))
    assert find_data_dir(alfworld_data_dir) == alfworld_data_dir
    assert find_data_dir(alfworld_data_dir / "json_2.1.1") == alfworld_data_dir


GAME = {"pddl_domain": "(define)", "grammar": "{}", "pddl_problem": "(define)", "solvable": True, "walkthrough": []}


def _make_tree(source: Path, with_games: bool = True, games: int = 1, split: str = "valid_unseen") -> Path:
    """Write ``games`` minimal games of ALFWorld's layout under ``source``; return the first game's folder."""
    for trial in range(1, games + 1):
        folder = "json_2.1.1" if with_games else "other"
        game_dir = source / folder / split / f"pick_and_place_simple-A-None-B-1/t{trial}"
        game_dir.mkdir(parents=True)
        (game_dir / "game.tw-pddl").write_text(json.dumps(GAME))
        (game_dir / "traj_data.json").write_text('{"task_type": "pick_and_place_simple"}')
    return source / ("json_2.1.1" if with_games else "other") / split / "pick_and_place_simple-A-None-B-1/t1"


def _make_archive(tmp_path: Path, with_games: bool = True, name: str = "games.tar.gz", games: int = 1) -> Path:
    source = tmp_path / "src"
    if not source.exists():
        _make_tree(source, with_games, games)
    archive = tmp_path / name
    with tarfile.open(archive, "w:" + name.rsplit(".", 1)[-1].replace("tar", "")) as tf:
        tf.add(source, arcname=".")
    return archive


def test_prepare_data_unpacks_and_records_the_source(tmp_path):
    archive = _make_archive(tmp_path)
    target = prepare_data(archive, data_dir=tmp_path / "data")
    assert [g.parent.name for g in list_games("valid_unseen", data_dir=target)] == ["t1"]
    manifest = json.loads((target / "prm_gym_data.json").read_text())
    assert manifest["source"] == str(archive) and len(manifest["sha256"]) == 64


def test_prepare_data_rejects_a_wrong_checksum_and_leaves_nothing(tmp_path):
    archive = _make_archive(tmp_path)
    with pytest.raises(ValueError, match="sha256 of .* is [0-9a-f]{64}, expected 00"):
        prepare_data(archive, data_dir=tmp_path / "data", sha256="00" * 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["games.tar.gz", "src"]


def test_prepare_data_rejects_an_archive_without_games(tmp_path):
    archive = _make_archive(tmp_path, with_games=False)
    with pytest.raises(DataNotFoundError, match="no `json_2.1.1/` folder"):
        prepare_data(archive, data_dir=tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_prepare_data_without_internet_gives_a_clear_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="Could not download .*`prm-gym data --archive PATH`"):
        prepare_data(data_dir=tmp_path / "data", url=f"file://{tmp_path}/missing.zip")


@pytest.mark.skipif(not SHARED_ARCHIVE.is_file(), reason="needs ../shared")
def test_prepare_data_verifies_the_known_shared_archive(tmp_path):
    target = prepare_data(SHARED_ARCHIVE, data_dir=tmp_path / "alfworld")
    assert len(list_games("valid_unseen", data_dir=target)) == 134
    assert prepare_data(SHARED_ARCHIVE, data_dir=target) == target  # already there: a no-op


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def good_cache(tmp_path):
    """A data folder prepared from a good archive of 2 games, and a snapshot of its files."""
    good = tmp_path / "good"
    good.mkdir()
    target = prepare_data(_make_archive(good, games=2), data_dir=tmp_path / "data")
    return target, _snapshot(target)


def _assert_untouched(good_cache) -> None:
    target, snapshot = good_cache
    assert _snapshot(target) == snapshot
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".data.")] == []


def _run_data(capsys, *args: str) -> tuple[int, str]:
    """Run `prm-gym data ARGS` in this process; return its exit status and its last line on stderr."""
    status = main(["data", *args])
    err = capsys.readouterr().err.strip().splitlines()
    return status, err[-1] if err else ""


def test_a_known_release_is_recognised_by_its_content_whatever_its_name(tmp_path, monkeypatch):
    archive = _make_archive(tmp_path, name="renamed.tar.gz")
    monkeypatch.setattr(data, "KNOWN_ARCHIVES", {"release.tar.gz": data.sha256_of(archive)})
    monkeypatch.setattr(data, "SPLITS", {"valid_unseen": 2, "tiny": None})  # the release has 2 games, this copy 1
    with pytest.raises(ValueError, match=r"renamed\.tar\.gz unpacked to \{'valid_unseen': 1\} games per split "
                                         r"instead of \{'valid_unseen': 2\}: it is damaged"):
        prepare_data(archive, data_dir=tmp_path / "data")
    monkeypatch.setattr(data, "SPLITS", {"valid_unseen": 1, "tiny": None})
    target = prepare_data(archive, data_dir=tmp_path / "data")
    assert json.loads((target / "prm_gym_data.json").read_text())["games"] == {"valid_unseen": 1}


@pytest.mark.parametrize("damage", ["not json", "missing keys", "no traj_data", "empty split"])
def test_an_unknown_archive_with_damaged_games_is_refused_and_the_old_games_kept(tmp_path, good_cache, damage):
    game_dir = _make_tree(tmp_path / "src", games=2)
    if damage == "not json":
        (game_dir / "game.tw-pddl").write_text('{"pddl_domain": "(def')
    elif damage == "missing keys":
        (game_dir / "game.tw-pddl").write_text('{"solvable": true}')
    elif damage == "no traj_data":
        (game_dir / "traj_data.json").unlink()
    else:
        (tmp_path / "src/json_2.1.1/valid_seen").mkdir()
    archive = _make_archive(tmp_path, name="other.tar.gz")
    with pytest.raises(ValueError, match=r"other\.tar\.gz"):
        prepare_data(archive, data_dir=good_cache[0], force=True)
    _assert_untouched(good_cache)


@pytest.mark.skipif(not SHARED_ARCHIVE.is_file(), reason="needs ../shared")
def test_a_one_byte_corrupt_release_under_another_name_is_refused_and_the_old_games_kept(tmp_path, good_cache, capsys):
    corrupt = bytearray(SHARED_ARCHIVE.read_bytes())
    corrupt[len(corrupt) // 10] ^= 1
    archive = tmp_path / "alfworld.tar.xz"
    archive.write_bytes(corrupt)
    status, line = _run_data(capsys, "--archive", str(archive), "--data-dir", str(good_cache[0]), "--force")
    assert status == 2 and line.startswith(f"prm-gym: error: {archive} is not a valid archive")
    _assert_untouched(good_cache)


def test_a_truncated_xz_archive_is_one_clear_line(tmp_path, good_cache, capsys):
    archive = _make_archive(tmp_path, name="games.tar.xz", games=3)
    archive.write_bytes(archive.read_bytes()[:-100])
    status, line = _run_data(capsys, "--archive", str(archive), "--data-dir", str(good_cache[0]), "--force")
    assert status == 2 and line == (
        f"prm-gym: error: {archive} is not a valid archive (Compressed file ended before the end-of-stream marker "
        "was reached): it is damaged or truncated; get it again."
    )
    _assert_untouched(good_cache)


def test_a_plain_tar_cut_between_two_members_is_refused(tmp_path, good_cache):
    archive = _make_archive(tmp_path, name="games.tar", games=2)
    with tarfile.open(archive) as tf:
        last = tf.getmembers()[-1]
    archive.write_bytes(archive.read_bytes()[: last.offset])  # the stream ends where the last member began
    with pytest.raises(ValueError, match=r"games\.tar is truncated: it ends after its member"):
        prepare_data(archive, data_dir=good_cache[0], force=True)
    _assert_untouched(good_cache)


@pytest.mark.parametrize("member", ["../escape.txt", "/abs/escape.txt", "link-out"])
def test_an_archive_with_a_member_outside_the_folder_is_refused(tmp_path, good_cache, capsys, member):
    source = tmp_path / "src"
    _make_tree(source)
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(source, arcname=".")
        info = tarfile.TarInfo(member)
        if member == "link-out":
            info.type, info.linkname = tarfile.SYMTYPE, "../../outside"
        tf.addfile(info, None if member == "link-out" else io.BytesIO(b""))
    status, line = _run_data(capsys, "--archive", str(archive), "--data-dir", str(good_cache[0]), "--force")
    assert status == 2 and line.startswith(f"prm-gym: error: Archive {archive} holds an unsafe member")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path.parent / "escape.txt").exists()
    _assert_untouched(good_cache)


def test_a_missing_archive_is_an_error_even_with_games_in_place(tmp_path, good_cache, capsys):
    missing = tmp_path / "missing.tar.xz"
    status, line = _run_data(capsys, "--archive", str(missing), "--data-dir", str(good_cache[0]))
    assert status == 2 and line == (
        f"prm-gym: error: Archive {missing} does not exist: check the path given to `--archive`."
    )


def test_data_says_how_many_games_each_split_in_place_has(tmp_path, capsys):
    status = main(["data", "--archive", str(_make_archive(tmp_path, games=2)), "--data-dir", str(tmp_path / "d")])
    assert status == 0 and capsys.readouterr().out == f"ALFWorld games in {tmp_path / 'd'}: valid_unseen 2\n"


def test_a_killed_prepare_leaves_the_old_games_and_the_next_one_cleans_up(tmp_path, good_cache):
    """A run killed after unpacking, before the swap: the games in place stay, its temporary folder goes next time."""
    target = good_cache[0]
    archive = _make_archive(tmp_path, name="other.tar.gz", games=3)
    code = textwrap.dedent(f"""
        import os, signal
        from prm_gym.envs.alfworld import data
        data._check_games = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
        data.prepare_data({str(archive)!r}, data_dir={str(target)!r}, force=True)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert _snapshot(target) == good_cache[1]
    assert len(list(target.parent.glob(".data.tmp-*"))) == 1
    assert list_games("valid_unseen", data_dir=prepare_data(data_dir=target, url="file:///nowhere")) == list_games(
        "valid_unseen", data_dir=target
    )  # still installed: nothing to download
    prepare_data(archive, data_dir=target, force=True)
    assert len(list_games("valid_unseen", data_dir=target)) == 3
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".data.")] == []


def test_a_partly_deleted_cache_is_not_taken_for_installed(tmp_path, good_cache):
    target = good_cache[0]
    deleted = list_games("valid_unseen", data_dir=target)[0].parent
    shutil.rmtree(deleted)  # what the old swap (delete the old folder, then move the new one in) could leave
    prepare_data(_make_archive(tmp_path, games=2), data_dir=target)  # no --force needed
    assert (deleted / "game.tw-pddl").is_file()
