"""Where ALFWorld's games live, and how they get there.

Games are looked up, in this order, in the ``data_dir`` argument, in ``$ALFWORLD_DATA`` (ALFWorld's own
convention, so an existing ALFWorld install is reused as it is) and in the per-user cache
(:func:`default_data_dir`). Each of these holds ALFWorld's layout::

    <data dir>/json_2.1.1/<split>/<task_type>-<Object>-<MRecep>-<Parent>-<scene>/<trial>/game.tw-pddl

:func:`prepare_data` fills the cache from a local archive or, on a machine with internet, from ALFWorld's official
release, checking the archive and the unpacked games before it replaces anything. The ``tiny`` split ships
inside this package and needs no data.
"""

from __future__ import annotations

import functools
import json
import logging
import lzma
import os
import shutil
import tarfile
import urllib.request
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from tqdm.auto import tqdm

from prm_gym.envs.alfworld.tasks import TaskType, parse_task_types, task_type_of_game_dir
from prm_gym.io import atomic_directory, cache_root, recover_directory, sha256_of

__all__ = [
    "SPLITS",
    "ALFWORLD_RELEASE_URL",
    "DataNotFoundError",
    "resolve_split",
    "default_data_dir",
    "find_data_dir",
    "list_games",
    "prepare_data",
    "select_games",
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

#: sha256 of archives known to hold ALFWorld's games, by file name; such content is recognised under any name.
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

    That is ``alfworld`` in :func:`prm_gym.io.cache_root`.
    """
    return cache_root() / "alfworld"


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
    downloaded first. What is checked:

    - the archive's sha256, against ``sha256`` when given, and against the recorded one for an archive named like
      a known release (:data:`KNOWN_ARCHIVES`);
    - a known release, recognised by its sha256 whatever its name: its number of games per split, once unpacked;
    - any other archive: its layout (``json_2.1.1/<split>/<game>/<trial>/``, no split empty) and every game
      (``game.tw-pddl`` a JSON object with the PDDL and grammar, a ``traj_data.json`` beside it), not its content;
    - every archive: that it unpacks completely (a damaged or truncated stream is an error), and no member would
      land outside the folder (``..``, absolute paths, links out of it).

    The games are unpacked into a temporary folder beside the target, checked, and only then swapped in at once
    (:func:`~prm_gym.io.atomic_directory`): a failed or killed run leaves the games already there as they were.

    Raises:
        DataNotFoundError: the archive does not exist, the download failed, or it holds no ``json_2.1.1/``.
        ValueError: the archive is damaged, unsafe or not the one expected (one line naming it).
    """
    target = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if archive is not None:
        archive = Path(archive).expanduser()
        if not archive.is_file():
            raise DataNotFoundError(f"Archive {archive} does not exist: check the path given to `--archive`.")
        digest = _check_sha256(archive, sha256)
    recover_directory(target)
    if _installed(target) and not force:
        logger.info("ALFWorld games already in %s", target)
        return target
    with atomic_directory(target) as staging:
        if archive is None:
            downloads = staging / ".prm_gym_download"
            downloads.mkdir()
            archive = _download(url, downloads / url.rsplit("/", 1)[-1])
            digest, source = _check_sha256(archive, sha256), url
        else:
            source = str(archive)
        known = digest in KNOWN_ARCHIVES.values()
        _unpack(archive, staging)
        if archive.parent.parent == staging:
            shutil.rmtree(archive.parent)
        counts = _check_games(staging, archive, release=known)
        if not known:
            logger.info("%s is not a release prm-gym knows: its layout and games were checked, not its content.",
                        archive)
        manifest = {"source": source, "sha256": digest, "games": counts}
        (staging / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    _solvable_games.cache_clear()
    return target


def _check_sha256(archive: Path, expected: str | None) -> str:
    """Return the archive's sha256, checked against ``expected`` or the one recorded for its file name."""
    actual = sha256_of(archive)
    expected = expected or KNOWN_ARCHIVES.get(archive.name)
    if expected is not None and actual != expected.lower():
        raise ValueError(
            f"sha256 of {archive} is {actual}, expected {expected}: the file is corrupt or not the one named."
        )
    return actual


def _game_files(split_dir: Path) -> list[Path]:
    return sorted(split_dir.glob("*/*/game.tw-pddl"))


def _installed(root: Path) -> bool:
    """Whether ``root`` holds games: all those its manifest records, when :func:`prepare_data` put them there."""
    if not _has_games(root):
        return False
    manifest = root / _MANIFEST
    if not manifest.exists():
        return True  # an ALFWorld data folder of the user's own
    try:
        counts = json.loads(manifest.read_text(encoding="utf-8")).get("games")
    except (OSError, ValueError, AttributeError):
        return False
    if counts is None:
        return True  # written before prm-gym recorded the counts
    return all(len(_game_files(root / _GAMES_SUBDIR / split)) == n for split, n in counts.items())


#: What every ``game.tw-pddl`` holds (ALFWorld's ``AlfredTWEnv`` and the fast engine read these).
_GAME_KEYS = ("pddl_domain", "pddl_problem", "grammar", "solvable")


def _check_games(root: Path, archive: Path, *, release: bool) -> dict[str, int]:
    """Check the games unpacked from ``archive`` into ``root``; return the number of games per split.

    A known ``release`` must have exactly its games per split (:data:`SPLITS`); another archive, at least one game,
    no empty split, and every game complete (:data:`_GAME_KEYS` in ``game.tw-pddl``, a ``traj_data.json``).
    """
    games_dir = root / _GAMES_SUBDIR
    if not games_dir.is_dir():
        raise DataNotFoundError(
            f"Archive {archive} has no `{_GAMES_SUBDIR}/` folder: it is not ALFWorld's text-game data."
        )
    files = {split.name: _game_files(split) for split in sorted(games_dir.iterdir()) if split.is_dir()}
    counts = {split: len(games) for split, games in files.items()}
    if release:
        expected = {split: n for split, n in SPLITS.items() if n is not None}
        if {split: counts.get(split, 0) for split in expected} != expected:
            raise ValueError(
                f"{archive} unpacked to {counts} games per split instead of {expected}: it is damaged; "
                "download it again."
            )
        return counts
    empty = [split for split, n in counts.items() if n == 0]
    if not counts or empty:
        where = f"its splits {empty} have" if empty else "it has"
        raise ValueError(
            f"Archive {archive} holds no ALFWorld games where expected ({where} no "
            f"`{_GAMES_SUBDIR}/<split>/<game>/<trial>/game.tw-pddl`): it is damaged or not ALFWorld's data."
        )
    for game in (game for games in files.values() for game in games):
        _check_game(game, archive, root)
    return counts


def _check_game(game: Path, archive: Path, root: Path) -> None:
    """Check that a ``game.tw-pddl`` is a JSON object with :data:`_GAME_KEYS` and has a ``traj_data.json``."""
    name = game.relative_to(root)
    try:
        data = json.loads(game.read_bytes().decode("utf-8"))
    except ValueError as error:  # not UTF-8, or not JSON
        raise ValueError(f"{name} in {archive} is not a JSON game file ({error}): the archive is damaged.") from None
    missing = [key for key in _GAME_KEYS if key not in data] if isinstance(data, dict) else list(_GAME_KEYS)
    if missing:
        raise ValueError(f"{name} in {archive} lacks {missing}: it is not an ALFWorld game, or is damaged.")
    if not (game.parent / "traj_data.json").is_file():
        raise ValueError(f"{name} in {archive} has no traj_data.json beside it: the archive is incomplete.")


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
    """Unpack every member of ``archive`` into the existing folder ``destination``, refusing unsafe members.

    Raises:
        ValueError: the archive is not a zip or tar, is damaged or truncated, or holds a member that would land
            outside ``destination`` (naming the archive).
    """
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    if member.startswith("/") or ".." in Path(member).parts:
                        raise ValueError(f"Archive {archive} holds an unsafe path {member!r}; refusing to unpack it.")
                zf.extractall(destination)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                tf.extractall(destination, filter=_strict_filter)
                _check_tar_end(tf, archive)
        else:
            raise ValueError(f"{archive} is neither a zip nor a tar archive.")
    except tarfile.FilterError as error:
        raise ValueError(f"Archive {archive} holds an unsafe member ({error}); refusing to unpack it.") from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, lzma.LZMAError, zlib.error, OSError) as error:
        if isinstance(error, OSError) and error.errno is not None:  # the disk's error, not the archive's
            raise
        problem = f"{archive} is not a valid archive ({error}): it is damaged or truncated; get it again."
        raise ValueError(problem) from None


def _strict_filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
    """Refuse absolute and ``..`` member names (the "data" filter would rewrite some), then apply that filter."""
    if member.name.startswith("/"):
        raise tarfile.AbsolutePathError(member)
    if ".." in Path(member.name).parts:
        raise tarfile.OutsideDestinationError(member, os.path.join(path, member.name))
    return tarfile.data_filter(member, path)


def _check_tar_end(tf: tarfile.TarFile, archive: Path) -> None:
    """Check the stream after the last member: the end-of-archive zero blocks, and nothing else but zeros.

    ``tarfile`` stops silently at a damaged header after the first, and at the end of a file cut short between
    two members, as at the end of the archive; what follows tells them apart. Reading the stream to its end
    also makes xz and gzip check their checksums.
    """
    stream = tf.fileobj
    if stream is None:  # only a closed TarFile has none
        return
    stream.seek(tf.offset)
    last = tf.getmembers()[-1].name if tf.getmembers() else None
    zeros = 0
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        if chunk.strip(b"\0"):
            raise ValueError(f"{archive} is damaged: unreadable data follows its member {last!r}; get it again.")
        zeros += len(chunk)
    if zeros < tarfile.BLOCKSIZE:
        raise ValueError(f"{archive} is truncated: it ends after its member {last!r}, without the end-of-archive "
                         "marker; get it again.")


T = TypeVar("T")


def select_games(games: Sequence[T], count: int | None, selection: str = "spread") -> list[T]:
    """Return ``count`` of ``games`` (all when ``None``): evenly spread over the list, or its first ones.

    Example:
        >>> select_games(list("aabbbcc"), 3), select_games(list("aabbbcc"), 3, "first")
        (['a', 'b', 'b'], ['a', 'a', 'b'])
    """
    if count is None or count >= len(games):
        return list(games)
    if selection == "first":
        return list(games[:count])
    return [games[i * len(games) // count] for i in range(count)]
