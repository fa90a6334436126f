import json
import tarfile
from pathlib import Path

import pytest
from conftest import SHARED_ARCHIVE

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


def _make_archive(tmp_path: Path, with_games: bool = True) -> Path:
    source = tmp_path / "src"
    game_dir = source / ("json_2.1.1" if with_games else "other") / "valid_unseen/pick_and_place_simple-A-None-B-1/t1"
    game_dir.mkdir(parents=True)
    (game_dir / "game.tw-pddl").write_text(json.dumps({"solvable": True}))
    archive = tmp_path / "games.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
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
