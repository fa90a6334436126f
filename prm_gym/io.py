"""Writing artefacts safely: a file is either its old self or completely new, never half-written."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["append_jsonl", "atomic_directory", "atomic_write_bytes", "atomic_write_text", "read_jsonl"]


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


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, like :func:`atomic_write_bytes`; return the path.

    Example:
        >>> import tempfile
        >>> path = atomic_write_text(Path(tempfile.mkdtemp()) / "out" / "results.json", "{}")
        >>> path.read_text()
        '{}'
    """
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_directory(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``target`` that replaces ``target`` when the block succeeds.

    A reader sees the old folder or the complete new one; a failing block leaves ``target`` as it was.

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
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        _usual_permissions(tmp, 0o777)
        if target.exists():
            old = tmp.with_suffix(".old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
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


def read_jsonl(path: str | os.PathLike[str], *, repair: bool = False) -> list[dict[str, Any]]:
    """Read a JSON-lines file; with ``repair``, cut off a last line left incomplete by an interrupted write.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "rows.jsonl"
        >>> append_jsonl(path, [{"a": 1}, {"a": 2}])
        >>> _ = open(path, "a").write('{"a": ')  # a write cut short
        >>> read_jsonl(path, repair=True), path.read_text().count(chr(10))
        ([{'a': 1}, {'a': 2}], 2)

    Raises:
        ValueError: a line other than an incomplete last one is not a JSON object (the file is not ours, or
            was damaged), or the last line is incomplete and ``repair`` is off.
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
    for number, line in enumerate(complete.decode("utf-8").splitlines(), start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"Line {number} of {path} is not valid JSON ({error.msg}).") from None
        if not isinstance(row, dict):
            raise ValueError(f"Line {number} of {path} is not a JSON object.")
        rows.append(row)
    return rows
