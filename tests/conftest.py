"""Shared fixtures: the real ALFWorld games, found where users keep them or unpacked from ../shared."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from prm_gym.envs.alfworld.data import DataNotFoundError, find_data_dir, prepare_data

#: Tests never download: a missing known model file is an error here, not a fetch (prm_gym.known_files).
os.environ["PRM_GYM_OFFLINE"] = "1"


def _share_the_cores_among_workers() -> None:
    """Give each pytest-xdist worker (and the processes it starts) its share of the cores as torch threads.

    Two workers with torch's default of one thread per core put 4 threads on 2 cores: each small operation then
    waits for a descheduled thread (benchmarks/RESULTS.md measured a 104-token forward at 3.8-4.8 s with 2
    threads on 2 shared cores, 0.13-0.20 s with 1), and the CI's longest test took 17 min. Set before torch is
    imported (it reads the variables then); a value set by the user is kept.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if workers > 1:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, threads)


_share_the_cores_among_workers()

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_ARCHIVE = SHARED / "data/alfworld/json_2.1.2-tw-pddl.tar.xz"
#: The shared SmolLM2-135M-Instruct: its tokenizer (Hugging Face format) and its GGUF weights.
SHARED_TOKENIZER = SHARED / "models/smollm2-135m-instruct/tokenizer"
SHARED_GGUF = SHARED / "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def alfworld_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The folder holding ``json_2.1.1/``; exported as $ALFWORLD_DATA so `gym.make` finds it in subprocesses too."""
    try:
        data_dir = find_data_dir()
    except DataNotFoundError:
        if not SHARED_ARCHIVE.is_file():
            raise
        data_dir = prepare_data(SHARED_ARCHIVE, data_dir=tmp_path_factory.mktemp("alfworld"))
    previous = os.environ.get("ALFWORLD_DATA")
    os.environ["ALFWORLD_DATA"] = str(data_dir)
    yield data_dir
    if previous is None:
        del os.environ["ALFWORLD_DATA"]
    else:
        os.environ["ALFWORLD_DATA"] = previous


@pytest.fixture(scope="session")
def generated_game(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small TextWorld game (``quest.z8`` and its ``quest.json``), made offline by TextWorld's ``tw-make``."""
    tw_make = shutil.which("tw-make") or str(Path(sys.executable).parent / "tw-make")
    game = tmp_path_factory.mktemp("tw") / "quest.z8"
    subprocess.run(
        [tw_make, "custom", "--world-size", "3", "--nb-objects", "6", "--quest-length", "3", "--seed", "7",
         "--output", str(game), "--silent"],
        check=True,
    )
    return game


def tiny_llama(model_class: str, seed: int = 0, dtype=None, **config):
    """A randomly initialised two-layer ``transformers.<model_class>`` Llama and the shared SmolLM2 tokenizer."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(SHARED_TOKENIZER)
    llama = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id, **config,
    )
    torch.manual_seed(seed)
    model = getattr(transformers, model_class)(llama).to(dtype or torch.float32).eval()
    return model, tokenizer


def tiny_prm(seed: int = 0, dtype=None, **kwargs):
    """A randomly initialised two-layer Llama PRM with the shared SmolLM2 tokenizer (no download)."""
    from prm_gym.prm import ProcessRewardModel

    model, tokenizer = tiny_llama("LlamaForSequenceClassification", seed, dtype, num_labels=1)
    return ProcessRewardModel(model, tokenizer, **kwargs)


def command_logliks(agent, context) -> list[float]:
    """An HFAgent's log-likelihood of each admissible command of ``context`` (its loglik mode's scores)."""
    state = dataclasses.replace(context, action=None, reason=None)
    answers = agent._answer_ids(state.admissible_commands)
    prompt = agent._prompt_ids(state, reserve=max(map(len, answers)))
    return agent._command_logliks([prompt], [answers])[0][0]


@pytest.fixture(scope="session")
def loop_models(tmp_path_factory):
    """A tiny random causal LM (pi0's base) and a tiny random PRM backbone, saved as model directories."""
    folder = tmp_path_factory.mktemp("models")
    model, tokenizer = tiny_llama("LlamaForCausalLM", seed=0)
    model.save_pretrained(folder / "policy")
    tokenizer.save_pretrained(folder / "policy")
    tiny_prm().save_pretrained(folder / "prm")
    return folder


@pytest.fixture(scope="session")
def loop_demonstrations(tmp_path_factory):
    """The gold walkthroughs of the 2 tiny games, as `prm-gym collect --agent walkthrough` writes them."""
    from prm_gym.cli import main

    folder = tmp_path_factory.mktemp("demos")
    assert main(["collect", "--agent", "walkthrough", "--split", "tiny", "--num-games", "2", "--repeats", "1",
                 "--num-envs", "1", "--vectorization", "sync", "--output-dir", str(folder)]) == 0  # fmt: skip
    return folder


#: The miniature loop of the loop tests (tests/test_agentprm.py, tests/test_inverse_prm_loop.py): 2 tiny games,
#: short episodes, 2 optimiser steps per training. :func:`write_miniature_loop` adds each loop's own settings.
MINIATURE_LOOP = """
iterations = 1
device = "cpu"
best_of_n = [2]
eval_seeds = [0]

[hf.prompt]
max_prompt_tokens = 512

[sft]
model = "{policy}"
max_steps = 2
save_steps = 2
max_prompt_tokens = 512

[rollouts]
split = "tiny"
num_games = 2
repeats = 2
expert_prefix_share = 0.5
num_envs = 2
vectorization = "sync"
max_episode_steps = 6

[prm]
model = "{prm}"
max_steps = 2
save_steps = 2
validation_fraction = 0.0
max_prompt_tokens = 512

[improvement]
n = 2

[improvement.sft]
max_steps = 2
save_steps = 2
max_prompt_tokens = 512

[evaluation]
split = "tiny"
num_games = 2
num_envs = 2
max_episode_steps = 6
"""


def write_miniature_loop(path: Path, loop_models: Path, *, top: str = "", tables: dict[str, str] | None = None) -> Path:
    """Write :data:`MINIATURE_LOOP` on ``loop_models`` to ``path``, with a loop's own settings; return ``path``.

    ``top`` (top-level keys) goes first; ``tables[name]`` (TOML lines) goes into the table ``[name]``, a new one
    at the end when the miniature loop has none.
    """
    text = top + MINIATURE_LOOP.format(policy=loop_models / "policy", prm=loop_models / "prm")
    for name, lines in (tables or {}).items():
        header = f"[{name}]\n"
        text = text.replace(header, header + lines) if header in text else f"{text}\n{header}{lines}"
    path.write_text(text, "utf-8")
    return path
