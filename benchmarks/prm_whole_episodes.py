"""PRM training per target row vs on whole episodes: tokens per epoch, and seconds per epoch on this machine.

Random rollouts on train games (a share from states along the walkthrough, as the AgentPRM loop collects them),
their Monte-Carlo targets, and the shared SmolLM2-135M as the PRM (bf16 autocast, full fine-tuning). Per row,
each target (state, action) is one forward of its whole render; on whole episodes, each rollout is one forward
with the head read at the end of every action (``PRMSettings.whole_episodes``). Both train the same targets
with the same weight each; the epoch time is extrapolated from ``--steps`` timed optimiser steps.

    cd benchmarks && python prm_whole_episodes.py --games 20 --repeats 2 --steps 4 --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import SHARED_GGUF, machine

from prm_gym.agents import RandomAgent
from prm_gym.prm.episode_items import episode_items
from prm_gym.prm.model import ProcessRewardModel
from prm_gym.prm.prompt import PromptConfig
from prm_gym.prm.targets import TargetsConfig, compute_targets
from prm_gym.prm.training import PRMConfig, PRMTrainer
from prm_gym.rollout import load_episodes
from prm_gym.rollout.collect import CollectConfig, collect_rollouts


def seconds_per_step(prm: ProcessRewardModel, args: PRMConfig, rows, episodes, steps: int) -> float:
    trainer = PRMTrainer(prm, args, rows, episodes, TargetsConfig())
    trainer.args.max_steps = 1
    trainer.train()  # warm-up: allocations, first kernels
    trainer.args.max_steps = steps
    start = time.perf_counter()
    trainer.train()  # from the start again, timed
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-rows", type=int, default=8, help="target rows per optimiser step (per row)")
    parser.add_argument("--max-prompt-tokens", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=None)
    options = parser.parse_args()
    if options.threads:
        torch.set_num_threads(options.threads)
    folder = Path(tempfile.mkdtemp())
    config = CollectConfig(split="train", num_games=options.games, game_selection="first", repeats=options.repeats,
                           expert_prefix_share=0.5, max_episode_steps=30,
                           output_dir=str(folder / "rollouts"))  # fmt: skip
    episodes = load_episodes(collect_rollouts(RandomAgent(seed=0), config, progress=False))
    rows = compute_targets(episodes, TargetsConfig())
    prompt = PromptConfig(max_prompt_tokens=options.max_prompt_tokens)
    prm = ProcessRewardModel.from_pretrained(SHARED_GGUF, device="cpu", dtype="float32", prompt_config=prompt)
    row_tokens = sum(map(len, prm.token_ids([row.context for row in rows])))
    items = episode_items(episodes, rows, TargetsConfig(), prm.token_ids)
    episode_tokens = sum(len(item.token_ids) for item in items)
    whole = sum(len(item.positions) > 1 for item in items)
    print(machine())
    print(f"{len(episodes)} rollouts, {len(rows)} target rows, {len(items)} whole-episode items "
          f"({whole} episodes whole, the rest split at turn drops)")  # fmt: skip
    print(f"tokens per epoch: per row {row_tokens:,}, whole episodes {episode_tokens:,} "
          f"({row_tokens / episode_tokens:.1f}x fewer)")  # fmt: skip
    per_episode_rows = len(rows) / len(items)
    batch_episodes = max(1, round(options.batch_rows / per_episode_rows))
    common = dict(max_steps=1, learning_rate=1e-5, validation_fraction=0.0, save_strategy="no", use_cpu=True,
                  bf16=True, disable_tqdm=True, report_to="none", logging_steps=1000)  # fmt: skip
    row_args = PRMConfig(output_dir=str(folder / "a"), per_device_train_batch_size=options.batch_rows, **common)
    per_row = seconds_per_step(prm, row_args, rows, episodes, options.steps)
    per_episode = seconds_per_step(prm, PRMConfig(output_dir=str(folder / "b"), whole_episodes=True,
                                                  per_device_train_batch_size=batch_episodes, **common),
                                   rows, episodes, options.steps)  # fmt: skip
    row_epoch = per_row * len(rows) / options.batch_rows
    episode_epoch = per_episode * len(items) / batch_episodes
    print(f"per row: {options.batch_rows} rows/step, {per_row:.1f} s/step, {row_epoch / 60:.1f} min/epoch")
    print(f"whole episodes: {batch_episodes} episodes/step (~{batch_episodes * per_episode_rows:.0f} rows), "
          f"{per_episode:.1f} s/step, {episode_epoch / 60:.1f} min/epoch ({row_epoch / episode_epoch:.1f}x)")


if __name__ == "__main__":
    main()
