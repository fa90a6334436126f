"""Game files checked before an engine opens them: one clear error naming the file instead of a dead process.

TextWorld hands Z-machine story files to Jericho's interpreter, which ends the whole Python process on a file it
cannot read ("Fatal error: Unknown Z-code version", exit 1, no exception). :func:`check_game_file` reads what the
interpreter would read first (the 64-byte header: version, story length, checksum) and raises a ``ValueError``
naming the file instead. A story whose code is itself broken behind a valid header can still stop the interpreter;
story files are trusted as far as their code goes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["check_game_file", "game_file_list", "game_format"]

_Z_MACHINE = re.compile(r"\.z[1-8]$")
_HEADER_BYTES = 64
#: Z-machine header fields (Z-machine Standard 1.1, section 11): byte offsets.
_FILE_LENGTH, _CHECKSUM = 0x1A, 0x1C


def game_format(path: str | os.PathLike[str]) -> str:
    """Return the format TextWorld plays ``path`` as: ``"z-machine"``, ``"tw-pddl"`` or ``"textworld-json"``.

    Raises:
        ValueError: on any other file name (Glulx ``.ulx`` games included: TextWorld 1.7 no longer plays them).

    Example:
        >>> game_format("games/quest.z8"), game_format("json_2.1.1/train/x/y/game.tw-pddl")
        ('z-machine', 'tw-pddl')
    """
    name = os.fspath(path)
    if _Z_MACHINE.search(name):
        return "z-machine"
    if name.endswith(".tw-pddl"):
        return "tw-pddl"
    if name.endswith(".json"):
        return "textworld-json"
    if name.endswith(".ulx"):
        raise ValueError(f"Game file {name!r} is a Glulx game, which TextWorld 1.7 no longer plays: use a .z8 build.")
    raise ValueError(f"Game file {name!r} is not a game TextWorld plays: expected a .z1-.z8, .tw-pddl or .json file.")


def check_game_file(path: str | os.PathLike[str]) -> None:
    """Check that ``path`` is a readable game file of a format TextWorld plays, with a sound Z-machine header.

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        OSError: when it cannot be read.
        ValueError: when its name or its header says it is not a playable game.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise FileNotFoundError(f"Game file {name!r} does not exist.")
    if game_format(name) == "z-machine":
        _check_story_header(name, Path(name).read_bytes())


def _check_story_header(name: str, data: bytes) -> None:
    """Check what Jericho's interpreter checks (and exits on) when it loads a story file."""
    if len(data) < _HEADER_BYTES:
        raise ValueError(f"Game file {name!r} is not a Z-machine story: {len(data)} bytes, shorter than its header.")
    version = data[0]
    if not 1 <= version <= 8:
        raise ValueError(f"Game file {name!r} is not a Z-machine story: its version byte is {version}, not 1-8.")
    scale = 2 if version <= 3 else 4 if version <= 5 else 8
    length = int.from_bytes(data[_FILE_LENGTH : _FILE_LENGTH + 2], "big") * scale or len(data)
    if not _HEADER_BYTES <= length <= len(data):
        raise ValueError(
            f"Game file {name!r} is truncated or corrupt: its header says {length} bytes, the file has {len(data)}."
        )
    checksum = int.from_bytes(data[_CHECKSUM : _CHECKSUM + 2], "big")
    if version >= 3 and checksum != sum(data[_HEADER_BYTES:length]) % 0x10000:
        raise ValueError(f"Game file {name!r} is corrupt: its checksum does not match its contents.")


def game_file_list(game_files: object) -> list[Path]:
    """Return ``game_files`` (one path, or an iterable of paths) as a non-empty list of existing files.

    Raises:
        TypeError: when ``game_files`` is neither a path nor an iterable of paths.
        ValueError: when it is empty.
        FileNotFoundError: naming the files that do not exist.

    Example:
        >>> game_file_list(42)
        Traceback (most recent call last):
        ...
        TypeError: `game_files` should be a game file path or a list of them. Received 42 (int).
    """
    if isinstance(game_files, (str, os.PathLike)):
        items: list[object] = [game_files]
    elif isinstance(game_files, Iterable) and not isinstance(game_files, (bytes, Mapping)):
        items = list(game_files)
    else:
        kind = type(game_files).__name__
        raise TypeError(f"`game_files` should be a game file path or a list of them. Received {game_files!r} ({kind}).")
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"`game_files` should hold game file paths. Received {item!r} ({type(item).__name__}).")
    if not items:
        raise ValueError("`game_files` is empty: pass at least one game file.")
    paths = [Path(item) for item in items if isinstance(item, (str, os.PathLike))]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise FileNotFoundError(f"Game files not found: {missing[:3]}{more}.")
    return paths
