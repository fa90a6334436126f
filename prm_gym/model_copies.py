"""Copies of one model at several paths: telling them from other models without loading any.

Runs record the model they used by its path (``runs/q0/model``); the same model shipped elsewhere
(``benchmarks/agentprm-cpu/q0/model``) is another path. :func:`canonical_model_paths` maps each copy to the first
path given that holds the same model, so that runs of the two merge (``prm-gym report``). Two paths hold the same
model when their files are byte for byte the same, except that LoRA adapters may name their base model by
different paths (:func:`~prm_gym.checkpoints.save_adapters` records it relative to the adapters' folder) as long
as those name copies of one base model. Files are hashed only where another path has files of the same names and
sizes, so reading many runs of different models costs a few ``stat`` calls.

Example:
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for name in ("a", "b", "c"):
    ...     _ = (root / name).mkdir(), (root / name / "w.bin").write_bytes(b"1" if name != "c" else b"2")
    >>> canonical_model_paths([str(root / n) for n in "abc"]) == {str(root / "b"): str(root / "a")}
    True
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from prm_gym.io import sha256_of
from prm_gym.known_files import KNOWN_FILES, is_known_file

__all__ = ["ADAPTER_CONFIG", "canonical_model_paths", "model_fingerprint"]

#: peft's file in a folder of LoRA adapters; it names the base model the adapters apply to.
ADAPTER_CONFIG = "adapter_config.json"


def canonical_model_paths(paths: Iterable[str]) -> dict[str, str]:
    """Map each path that holds a copy of an earlier path's model to that earlier path (others are left out).

    Paths that are not on this machine (hub ids, deleted folders) are never copies of anything.
    """
    layouts: dict[tuple[tuple[str, int], ...], list[str]] = {}
    for path in dict.fromkeys(paths):
        layout = _layout(Path(path))
        if layout is not None:
            layouts.setdefault(layout, []).append(path)
    copies: dict[str, str] = {}
    for group in (g for g in layouts.values() if len(g) > 1):
        first: dict[str, str] = {}
        for path in group:
            original = first.setdefault(model_fingerprint(path), path)
            if original != path:
                copies[path] = original
    return copies


def model_fingerprint(path: str | Path) -> str:
    """Return a sha256 over a model file's or folder's files (names and bytes), adapters' base by its fingerprint.

    Raises:
        FileNotFoundError: nothing at ``path``.
    """
    return _fingerprint(Path(path), frozenset())


def _fingerprint(root: Path, within: frozenset[Path]) -> str:
    """Return :func:`model_fingerprint` of ``root``, a base of the adapters in ``within`` (which it cannot be)."""
    if not root.exists():
        raise FileNotFoundError(f"No model at {str(root)!r}.")
    digest = hashlib.sha256()
    for name, file in _files(root):
        digest.update(f"{name}\0".encode())
        if root.is_dir() and name == ADAPTER_CONFIG:
            digest.update(_adapter_config_resolved(root, within | {root.resolve()}).encode())
        else:
            digest.update(bytes.fromhex(sha256_of(file)))
    return digest.hexdigest()


def _files(root: Path) -> list[tuple[str, Path]]:
    """Return the model's files by name: ``root`` itself, or every file under the folder ``root``, sorted."""
    if root.is_file():
        return [(root.name, root)]
    return sorted((file.relative_to(root).as_posix(), file) for file in root.rglob("*") if file.is_file())


def _layout(root: Path) -> tuple[tuple[str, int], ...] | None:
    """Return the model's files' names and sizes (None if absent); the adapters' config's size varies with copies."""
    if not root.exists():
        return None
    return tuple((name, -1 if name == ADAPTER_CONFIG else file.stat().st_size) for name, file in _files(root))


def _adapter_config_resolved(folder: Path, within: frozenset[Path]) -> str:
    """Return the adapters' config as canonical JSON, its base model named by what it is, not by where.

    A known file (:mod:`prm_gym.known_files`) is named by its sha256 (it loads from any path, fetched where it is
    missing), another local base (pi1's adapters on pi0's) by its own fingerprint, a hub id as it is.
    """
    text = (folder / ADAPTER_CONFIG).read_text("utf-8", errors="replace")
    try:
        config = json.loads(text)
    except ValueError:
        return text
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if isinstance(base, str) and is_known_file(base):  # loads as that file wherever it lies, or is fetched
        config["base_model_name_or_path"] = f"sha256:{KNOWN_FILES[Path(base).name].sha256}"
    elif isinstance(base, str) and (folder / base).exists() and (folder / base).resolve() not in within:
        config["base_model_name_or_path"] = _fingerprint(folder / base, within)
    return json.dumps(config, sort_keys=True)
