"""Writing artefacts safely: a file is either its old self or completely new, never half-written.

Also reading back what was written (JSON-lines and JSON config files, with errors that name the file and the
line), and the folder locks that keep two runs from writing to one place at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "append_jsonl",
    "atomic_directory",
    "atomic_write_bytes",
    "atomic_write_text",
    "cache_root",
    "config_differences",
    "lock_folder",
    "read_folder_config",
    "read_json_object",
    "read_jsonl",
    "read_rows_folder",
    "recover_directory",
    "sha256_of",
    "write_parquet",
    "write_rows_folder",
]

#: The lock file a run holds in the folder it writes (:func:`lock_folder`).
FOLDER_LOCK = ".lock"

_Row = TypeVar("_Row")


def _usual_permissions(path: str | os.PathLike[str], mode: int) -> None:
    """Give ``path`` ``mode`` less the umask (temporary files and folders are made private, 0600/0700)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file beside it and a rename; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, suffix=".tmp", delete=False) as f:
        try:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            f.close()
            _usual_permissions(f.name, 0o666)
            os.replace(f.name, path)
        except BaseException:
            os.unlink(f.name)
            raise
    return path


def cache_root() -> Path:
    """Return prm-gym's per-user cache folder, which holds fetched games, converted models and fetched files.

    That is ``$PRM_GYM_CACHE``, else ``$XDG_CACHE_HOME/prm_gym``, else ``~/.cache/prm_gym``.
    """
    if os.environ.get("PRM_GYM_CACHE"):
        return Path(os.environ["PRM_GYM_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "prm_gym"


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, like :func:`atomic_write_bytes`; return the path.

    Example:
        >>> import tempfile
        >>> path = atomic_write_text(Path(tempfile.mkdtemp()) / "out" / "results.json", "{}")
        >>> path.read_text()
        '{}'
    """
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def _exclusive_lock(lock_file: Path, busy: str | None, *, remove: bool = False) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (created if need be) for the block; released if the process dies.

    Args:
        lock_file: The file to lock.
        busy: The error when another process holds it; ``None`` waits for it instead.
        remove: Delete the file at the end (while still locked), so that nothing is left behind; a lock taken on
            a file that was deleted meanwhile is then taken again on the new file.

    Raises:
        ValueError: with the message ``busy`` when another process holds it.
    """
    while True:
        lock = open(lock_file, "a")  # closed after the block, below
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if busy is None else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise ValueError(busy) from None
        if not remove or _same_file(lock.fileno(), lock_file):
            break
        lock.close()  # its holder deleted it before we had it: lock the file now there
    try:
        yield
    finally:
        if remove:
            lock_file.unlink(missing_ok=True)
        lock.close()


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the open file ``fd``."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def lock_folder(folder: str | os.PathLike[str], writer: str) -> Iterator[Path]:
    """Create ``folder`` and hold its lock while writing there: two runs appending to one file would mix their rows.

    Example:
        >>> import tempfile
        >>> with lock_folder(Path(tempfile.mkdtemp()) / "run", "evaluation") as folder:
        ...     with lock_folder(folder, "evaluation"):  # doctest: +ELLIPSIS
        ...         pass
        Traceback (most recent call last):
        ValueError: .../run is being written by another evaluation; wait for it to end, or choose another output_dir.

    Raises:
        ValueError: when another ``writer`` (any process) holds the lock.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    busy = f"{folder} is being written by another {writer}; wait for it to end, or choose another output_dir."
    with _exclusive_lock(folder / FOLDER_LOCK, busy):
        yield folder


def _sibling(target: Path, role: str) -> Path:
    """Return the hidden path beside ``target`` that :func:`atomic_directory` uses for ``role`` (lock, old...)."""
    return target.parent / f".{target.name}.{role}"


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic rename; return False where the system or file system cannot.

    Linux has ``renameat2(RENAME_EXCHANGE)`` and macOS ``renamex_np(RENAME_SWAP)``: a reader sees one folder or
    the other at each path, never none.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
            at_fdcwd, rename_exchange = -100, 2
            libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            status = libc.renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange)
        elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
            rename_swap = 2
            libc.renamex_np.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
            status = libc.renamex_np(os.fsencode(first), os.fsencode(second), rename_swap)
        else:
            return False
    except OSError:  # no C library to load
        return False
    if status == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), str(second))


def _replace_directory(new: Path, target: Path) -> None:
    """Move the folder ``new`` to ``target``, replacing what is there; the old content is deleted afterwards.

    With an atomic exchange the old folder lands at ``new``'s path (a temporary one, deleted next). Without, the
    old folder is first renamed to ``.<name>.old`` beside it: a process killed between the two renames leaves no
    ``target`` but that folder, which :func:`_recover` puts back.
    """
    if not target.exists():
        os.replace(new, target)
    elif _exchange(new, target):
        shutil.rmtree(new)
    else:
        old = _sibling(target, "old")
        os.replace(target, old)
        try:
            os.replace(new, target)
        except BaseException:
            os.replace(old, target)
            raise
        shutil.rmtree(old)


def _recover(target: Path) -> None:
    """Undo what a killed :func:`atomic_directory` left beside ``target`` (its lock must be held).

    Its temporary folders are deleted; a ``.<name>.old`` folder is the previous ``target``: it is put back when
    ``target`` is missing (killed between the two renames), else deleted (killed before deleting it).
    """
    prefix = _sibling(target, "tmp-").name
    for stray in target.parent.glob(f"{prefix}*"):
        if "." not in stray.name[len(prefix):]:  # not a longer name's folder: mkdtemp's suffix has no dot
            shutil.rmtree(stray, ignore_errors=True)
    old = _sibling(target, "old")
    if old.is_dir():
        if target.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, target)


def recover_directory(target: str | os.PathLike[str]) -> None:
    """Undo what a killed :func:`atomic_directory` left beside ``target``, unless one is writing it right now."""
    target = Path(target)
    if target.parent.is_dir():
        with contextlib.suppress(ValueError), _exclusive_lock(_sibling(target, "lock"), "busy", remove=True):
            _recover(target)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``target`` that replaces ``target`` when the block succeeds.

    A reader sees the old folder or the complete new one; a failing block leaves ``target`` as it was, and so
    does a killed process: the next call cleans up after it. Two processes writing ``target`` take turns: the
    lock ``.<name>.lock`` beside it is held (and removed) while the block runs, and a second waits for it.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "model"
        >>> with atomic_directory(target) as tmp:
        ...     _ = (tmp / "weights.safetensors").write_bytes(b"...")
        >>> sorted(p.name for p in target.iterdir())
        ['weights.safetensors']
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(_sibling(target, "lock"), None, remove=True):
        _recover(target)
        tmp = Path(tempfile.mkdtemp(prefix=_sibling(target, "tmp-").name, dir=target.parent))
        try:
            yield tmp
            _usual_permissions(tmp, 0o777)
            _replace_directory(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def append_jsonl(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Append ``rows`` to a JSON-lines file in one write, flushed to disk (a crash loses at most this write)."""
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    with open(path, "a", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


#: The file of a rows folder (targets, transitions) that records what made its rows.
FOLDER_CONFIG_FILE = "config.json"


def write_rows_folder(
    folder: str | os.PathLike[str], file_name: str, rows: Iterable[Mapping[str, Any]], meta: Mapping[str, Any]
) -> Path:
    """Write ``rows`` to ``folder/file_name`` (JSON lines), ``meta`` and prm_gym's version to its config.json.

    Each file is written atomically; ``folder`` is returned. The rows of ``prm-gym targets`` and ``prm-gym
    transitions``, read back by :func:`read_rows_folder` and :func:`read_folder_config`.
    """
    from prm_gym import __version__

    folder = Path(folder)
    atomic_write_text(folder / file_name, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    meta = {**meta, "prm_gym_version": __version__}
    atomic_write_text(folder / FOLDER_CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
    return folder


def read_rows_folder(
    folder: str | os.PathLike[str], file_name: str, from_dict: Callable[[dict[str, Any]], _Row], *, command: str
) -> list[_Row]:
    """Return the rows :func:`write_rows_folder` wrote, each made by ``from_dict``.

    Raises:
        FileNotFoundError: when the folder or its ``file_name`` does not exist (``prm-gym <command>`` writes it).
        ValueError: when the file is empty or a row is malformed (the line is named).
    """
    file = Path(folder) / file_name
    if not file.is_file():
        raise FileNotFoundError(f"No {command} at {folder}: {file} does not exist (`prm-gym {command}` writes it).")
    rows = []
    for number, row in enumerate(read_jsonl(file), start=1):
        try:
            rows.append(from_dict(row))
        except ValueError as error:
            raise ValueError(f"Line {number} of {file}: {error}") from None
    if not rows:
        raise ValueError(f"{file} is empty.")
    return rows


def read_folder_config(folder: str | os.PathLike[str], *, command: str) -> dict[str, Any]:
    """Return the :data:`FOLDER_CONFIG_FILE` of a folder :func:`write_rows_folder` wrote for ``prm-gym <command>``.

    Raises:
        FileNotFoundError: when it does not exist.
        ValueError: when it is not a JSON object (damaged): the file is named.
    """
    file = Path(folder) / FOLDER_CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"No {command} at {folder}: {file} does not exist (`prm-gym {command}` writes it).")
    return read_json_object(file, f"Make them again with `prm-gym {command}`.")


def write_parquet(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``rows`` (JSON-like dicts, one per row) to a Parquet file, atomically; return its path.

    Column types are inferred from every row (a column that is ``None`` in some rows and text in others is text),
    so the file loads with ``datasets.load_dataset("parquet", data_files=...)`` or ``pandas.read_parquet``.

    Raises:
        ImportError: without ``pyarrow`` (the ``llm`` extra installs it, with ``datasets``).
        ValueError: when there are no rows.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as error:
        raise ImportError("Writing Parquet needs `pyarrow`: pip install 'prm-gym[llm]'") from error
    if not rows:
        raise ValueError(f"No rows to write to {path}.")
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(list(rows)), buffer)
    return atomic_write_bytes(path, buffer.getvalue().to_pybytes())


def read_jsonl(path: str | os.PathLike[str], *, repair: bool = False) -> list[dict[str, Any]]:
    r"""Read a JSON-lines file; with ``repair``, cut off a last line left incomplete by an interrupted write.

    Lines end at ``\n`` only: :func:`append_jsonl` writes U+2028 and the other Unicode line separators as they
    are (``ensure_ascii=False``), inside JSON strings, where they belong to the line.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "rows.jsonl"
        >>> append_jsonl(path, [{"a": 1}, {"a": "x\u2028y"}])
        >>> _ = open(path, "a").write('{"a": ')  # a write cut short
        >>> read_jsonl(path, repair=True), path.read_text().count(chr(10))
        ([{'a': 1}, {'a': 'x\u2028y'}], 2)

    Raises:
        ValueError: a line other than an incomplete last one is not UTF-8 or not a JSON object (the file is not
            ours, or was damaged), or the last line is incomplete and ``repair`` is off.
    """
    path = Path(path)
    raw = path.read_bytes()
    complete, _, tail = raw.rpartition(b"\n")
    if tail:
        if not repair:
            raise ValueError(f"{path} ends with an incomplete line: it was cut short while being written.")
        with open(path, "r+b") as f:
            f.truncate(len(complete) + 1 if complete or raw.startswith(b"\n") else 0)
    rows = []
    for number, line in enumerate(complete.split(b"\n") if complete else [], start=1):
        try:
            row = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise ValueError(
                f"Line {number} of {path} is not UTF-8 text (byte {error.start + 1}): the file was damaged."
            ) from None
        except json.JSONDecodeError as error:
            raise ValueError(f"Line {number} of {path} is not valid JSON ({error.msg}).") from None
        if not isinstance(row, dict):
            raise ValueError(f"Line {number} of {path} is not a JSON object.")
        rows.append(row)
    return rows


def read_json_object(path: str | os.PathLike[str], remedy: str = "") -> dict[str, Any]:
    """Read a JSON file holding an object (a run's ``config.json``...), with one clear error if it is damaged.

    Args:
        path: The file.
        remedy: What the user can do about a damaged file, appended to the error.

    Raises:
        FileNotFoundError: when it does not exist.
        ValueError: when it is not UTF-8, not JSON, or not a JSON object (the file is named).
    """
    path = Path(path)
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        problem = f"is not UTF-8 text (byte {error.start + 1})"
    except json.JSONDecodeError as error:
        problem = f"is not valid JSON ({error.msg}, line {error.lineno})"
    else:
        if isinstance(value, dict):
            return value
        problem = f"holds a JSON {type(value).__name__}, not an object"
    raise ValueError(f"{path} {problem}: it was damaged or not written by prm-gym. {remedy}".rstrip())


def config_differences(
    recorded: Mapping[str, Any],
    current: Mapping[str, Any],
    *,
    ignored: Collection[str] = (),
    prefix: str = "",
    defaults: Mapping[str, Any] | None = None,
) -> list[str]:
    """Name the settings of ``current`` that ``recorded`` has otherwise, as ``"name: old there, new here"``.

    Nested settings are compared one by one (``hf.temperature``); names in ``ignored`` (dotted for nested ones)
    are skipped; a setting ``recorded`` lacks counts as its value in ``defaults`` (a setting added since the
    record was written, whose default keeps the behaviour it had), else as ``None``.
    Values are compared as JSON would store them (a tuple equals a list).

    Example:
        >>> config_differences({"seed": 0, "hf": {"top_p": 1.0}, "device": "cpu"},
        ...                    {"seed": 1, "hf": {"top_p": 0.9}, "device": "cuda"}, ignored={"device"})
        ['seed: 0 there, 1 here', 'hf.top_p: 1.0 there, 0.9 here']
    """
    differences = []
    for name, value in json.loads(json.dumps(current)).items():
        dotted = prefix + name
        if dotted in ignored:
            continue
        default = (defaults or {}).get(name)
        old = recorded.get(name, json.loads(json.dumps(default)))
        if isinstance(old, dict) and isinstance(value, dict):
            nested = default if isinstance(default, Mapping) else None
            differences += config_differences(old, value, ignored=ignored, prefix=dotted + ".", defaults=nested)
        elif old != value:
            differences.append(f"{dotted}: {old!r} there, {value!r} here")
    return differences
