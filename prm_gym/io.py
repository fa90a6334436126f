"""Writing artefacts safely: a file is either its old self or completely new, never half-written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_text"]


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file beside it and a rename; return the path.

    Example:
        >>> import tempfile
        >>> path = atomic_write_text(Path(tempfile.mkdtemp()) / "out" / "results.json", "{}")
        >>> path.read_text()
        '{}'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, suffix=".tmp", delete=False) as f:
        try:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
            f.close()
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(f.name, 0o666 & ~umask)  # NamedTemporaryFile makes 0600 files; give the usual permissions.
            os.replace(f.name, path)
        except BaseException:
            os.unlink(f.name)
            raise
    return path
