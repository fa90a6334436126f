"""Where ALFWorld's games live, and how they get there.

Games are looked up, in this order, in the ``data_dir`` argument, in ``$ALFWORLD_DATA`` (ALFWorld's own
convention, so an existing ALFWorld install is reused as it is) and in the per-user cache
(:func:`default_data_dir`). Each of these holds ALFWorld's layout::

    <data dir>/json_2.1.1/<split>/<task_type>-<Object>-<MRecep>-<Parent>-<scene>/<trial>/game.tw-pddl

:func:`prepare_data` fills the cache from a local archive (checking its sha256) or, on a machine with
internet, from ALFWorld's official release. The ``tiny`` split ships inside this package and needs no data.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterable
from pathlib import Path

from tqdm.auto import tqdm

from prm_gym.envs.alfworld.tasks import TaskType, parse_task_types, task_type_of_game_dir

__all__ = [
    "SPLITS",
    "ALFWORLD_RELEASE_URL",
    "DataNotFoundError",
    "resolve_split",
    "default_data_dir",
    "find_data_dir",
    "list_games",
    "prepare_data",
]

logger = logging.getLogger(__name__)

#: Splits and their number of games in ALFWorld 2.1.2 (``tiny`` ships with prm-gym).
SPLITS: dict[str, int | None] = {
    "train": 3553,
    "valid_seen": 140,
    "valid_unseen": 134,
    "valid_train": 200,
    "tiny": None,
}
_SPLIT_ALIASES = {"eval_in_distribution": "valid_seen", "eval_out_of_distribution": "valid_unseen"}

#: ALFWorld's official text-game release (the asset ``alfworld-download`` fetches).
ALFWORLD_RELEASE_URL = "https://github.com/alfworld/alfworld/releases/download/0.4.0/json_2.1.2_tw-pddl.zip"

#: sha256 of archives known to hold ALFWorld's games, by file name.
KNOWN_ARCHIVES = {
    "json_2.1.2-tw-pddl.tar.xz": "aff52ec5e62a4d0bd287e41109d5bb85277e5dd96ff2107310c20b9a55829cfd",
}

_GAMES_SUBDIR = "json_2.1.1"
_TINY_DIR = Path(__file__).parent / "tiny_games"
_MANIFEST = "prm_gym_data.json"


class DataNotFoundError(FileNotFoundError):
    """ALFWorld's games are not where prm-gym looked; the message says what to run."""


def resolve_split(split: str) -> str:
    """Return the canonical split name, accepting ALFWorld's ``eval_*`` names as aliases.

    Example:
        >>> resolve_split("eval_out_of_distribution")
        'valid_unseen'
    """
    canonical = _SPLIT_ALIASES.get(split, split)
    if canonical not in SPLITS:
        known = ", ".join([*SPLITS, *_SPLIT_ALIASES])
        raise ValueError(f"Unknown ALFWorld split {split!r}. Known splits: {known}.")
    return canonical


def default_data_dir() -> Path:
    """Return the per-user cache folder for ALFWorld's games.

    That is ``$PRM_GYM_CACHE/alfworld``, else ``$XDG_CACHE_HOME/prm_gym/alfworld``, else ``~/.cache/prm_gym/alfworld``.
    """
    cache = os.environ.get("PRM_GYM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "prm_gym"
    )
    return Path(cache) / "alfworld"


def _has_games(root: Path) -> bool:
    return (root / _GAMES_SUBDIR).is_dir()


def find_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Find the folder holding ``json_2.1.1/``: ``data_dir``, else ``$ALFWORLD_DATA``, else the cache.

    Raises:
        DataNotFoundError: with the command that puts the games in place.
    """
    if data_dir is not None:
        candidates = [("data_dir", Path(data_dir).expanduser())]
    else:
        candidates = [("ALFWORLD_DATA", Path(p).expanduser()) for p in [os.environ.get("ALFWORLD_DATA")] if p]
        candidates.append(("the prm-gym cache", default_data_dir()))
    for _, root in candidates:
        if _has_games(root):
            return root
        if root.name == _GAMES_SUBDIR and root.is_dir():
            return root.parent
    looked = "; ".join(f"{where}: {root}" for where, root in candidates)
    raise DataNotFoundError(
        f"No ALFWorld games found (looked for a `{_GAMES_SUBDIR}/` folder in {looked}). "
        "Run `prm-gym data` to download ALFWorld's release into the cache, or "
        "`prm-gym data --archive PATH/json_2.1.2-tw-pddl.tar.xz` to unpack a local copy, or point "
        "`data_dir=` / $ALFWORLD_DATA at an unpacked ALFWorld data folder. "
        "The bundled `split=\"tiny\"` needs no data."
    )


def list_games(
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    task_types: Iterable[str | int] | str | int | None = None,
) -> list[Path]:
    """List the solvable games of a split, sorted by path, optionally filtered by task type.

    Games are chosen as ALFWorld's ``AlfredTWEnv.collect_game_files`` does: a ``game.tw-pddl`` whose
    ``solvable`` flag is true, outside the "movable" and "Sliced" folders ALFWorld leaves out.

    Example:
        >>> [p.parent.parent.name.split("-")[0] for p in list_games("tiny", task_types="cool")]
        ['pick_cool_then_place_in_recep']
    """
    split = resolve_split(split)
    split_dir = _TINY_DIR if split == "tiny" else find_data_dir(data_dir) / _GAMES_SUBDIR / split
    if not split_dir.is_dir():
        raise DataNotFoundError(f"The ALFWorld data folder has no {split!r} split: {split_dir} does not exist.")
    wanted = set(parse_task_types(task_types))
    games = [game for game, task_type in _solvable_games(split_dir) if task_type in wanted]
    if not games:
        raise DataNotFoundError(f"No solvable games of task types {sorted(t.name for t in wanted)} in {split_dir}.")
    return games


@functools.lru_cache(maxsize=16)
def _solvable_games(split_dir: Path) -> tuple[tuple[Path, TaskType], ...]:
    games = []
    for game_file in sorted(split_dir.glob("*/*/game.tw-pddl")):
        if "movable" in str(game_file) or "Sliced" in str(game_file):
            continue
        try:
            with open(game_file, encoding="utf-8") as f:
                solvable = json.load(f).get("solvable", False)
        except (OSError, json.JSONDecodeError) as error:
            raise DataNotFoundError(f"Unreadable ALFWorld game file {game_file}: {error}") from error
        if solvable:
            games.append((game_file, task_type_of_game_dir(game_file.parent.parent.name)))
    return tuple(games)


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def prepare_data(
    archive: str | os.PathLike[str] | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    url: str = ALFWORLD_RELEASE_URL,
    sha256: str | None = None,
    force: bool = False,
) -> Path:
    """Put ALFWorld's games into ``data_dir`` (default: the cache) and return that folder.

    With ``archive`` (``.tar.xz``/``.tar.gz``/``.zip``) the local file is unpacked; otherwise ``url`` is
    downloaded first. The archive's sha256 must equal ``sha256`` or, for a known archive name, the
    recorded one. Unpacking goes to a temporary folder beside the target, which is moved into place
    only when complete, so an interrupted run never leaves half the games behind.
    """
    target = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if _has_games(target) and not force:
        logger.info("ALFWorld games already in %s", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".prm_gym_unpack_") as tmp:
        if archive is None:
            archive = _download(url, Path(tmp) / url.rsplit("/", 1)[-1])
        archive = Path(archive).expanduser()
        if not archive.is_file():
            raise DataNotFoundError(f"Archive {archive} does not exist.")
        actual = sha256_of(archive)
        expected = sha256 or KNOWN_ARCHIVES.get(archive.name)
        if expected is not None and actual != expected.lower():
            raise ValueError(
                f"sha256 of {archive} is {actual}, expected {expected}: the file is corrupt or not the one named."
            )
        staging = Path(tmp) / "data"
        _unpack(archive, staging)
        if not _has_games(staging):
            raise DataNotFoundError(
                f"Archive {archive} has no `{_GAMES_SUBDIR}/` folder: it is not ALFWorld's text-game data."
            )
        manifest = {"source": str(archive) if archive.parent != Path(tmp) else url, "sha256": actual}
        (staging / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    _solvable_games.cache_clear()
    return target


def _download(url: str, destination: Path) -> Path:
    logger.info("Downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as out:  # noqa: S310
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=destination.name) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
    except OSError as error:
        raise DataNotFoundError(
            f"Could not download ALFWorld's games from {url} ({error}). Without internet, unpack a local copy "
            "with `prm-gym data --archive PATH`."
        ) from error
    return destination


def _unpack(archive: Path, destination: Path) -> None:
    destination.mkdir(parents=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                if member.startswith("/") or ".." in Path(member).parts:
                    raise ValueError(f"Archive {archive} holds an unsafe path {member!r}; refusing to unpack it.")
            zf.extractall(destination)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            tf.extractall(destination, filter="data")
    else:
        raise ValueError(f"{archive} is neither a zip nor a tar archive.")
