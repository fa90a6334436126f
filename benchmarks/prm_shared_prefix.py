"""Best-of-N turn scoring with the SmolLM2 PRM, shared-prefix scoring on vs off, N = 1, 4, 8, 16, side by side.

    python benchmarks/prm_shared_prefix.py --states 8
    python benchmarks/prm_shared_prefix.py --states 8 --save-states states.jsonl   # then, where no ALFWorld is:
    python benchmarks/prm_shared_prefix.py --load-states states.jsonl --model <dir> --random-weights --device cuda

States are real ALFWorld states with real rendered histories: turn ``--turn`` (10 by default) of seeded
uniformly random play in ``--states`` evenly spaced games of a split (valid_unseen; games whose episode ends
before that turn, or whose state has fewer than 16 admissible commands, are skipped), so contexts run ~1,000
tokens. At each state and N, N distinct admissible commands (a seeded sample) are proposed and scored by one
``ProcessRewardModel.score`` call, as ``BestOfNAgent`` scores a turn, once with ``shared_prefix`` on and once
off, alternating which goes first so that load drifts hit both. The model is the shared SmolLM2-135M-Instruct
GGUF (bf16 on CPU, as the project scores; fresh score head: cost does not depend on training), after a warm-up;
``--random-weights`` builds it from a config directory instead (the cost does not depend on the weights either).

Also printed: this machine's bf16 matmul peak (``--peak-size`` cubed products) and the scorer's tokens/s against
it, taking 2 x (parameters outside the embedding table) FLOPs per token (attention's own products are left out,
as that convention does); "computed" tokens are what the model runs (the prefix once, plus the suffixes), the
plain tokens/s counts every context's tokens. The largest score difference between on and off (bf16) is the
rounding the shared path changes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time

import gymnasium as gym
import torch
from common import SHARED_GGUF, machine
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

import prm_gym  # noqa: F401  (registers the environments)
from prm_gym.devices import resolve_device, resolve_dtype
from prm_gym.prm import Context, ProcessRewardModel
from prm_gym.prm.shared_prefix import plan_groups

#: The N of Best-of-N measured.
NS = (1, 4, 8, 16)


def random_play_states(split: str, states: int, turn: int, seed: int) -> list[Context]:
    """Return the state at ``turn`` of seeded random play in ``states`` evenly spaced games with 16+ commands."""
    env = gym.make("prm_gym/ALFWorld-v0", split=split, shuffle=False, max_episode_steps=turn + 1)
    games = len(env.unwrapped.game_files)  # type: ignore[attr-defined]
    found: list[Context] = []
    for game in [int(i * games / states) for i in range(states)] + list(range(games)):
        if len(found) == states:
            break
        rng = random.Random(seed + game)
        observation, info = env.reset(seed=seed, options={"game": game})
        context = Context.from_reset(observation, info)
        for _ in range(turn):
            command = rng.choice(context.admissible_commands)
            observation, _, terminated, truncated, info = env.step(command)
            if terminated:
                break
            context = context.propose(command).advance(observation, info)
        else:
            if len(context.admissible_commands) >= max(NS) and context not in found:
                found.append(context)
    env.close()
    return found


def bf16_peak(size: int, device: torch.device, repeats: int = 5) -> float:
    """Return the best FLOP/s of a ``size``-cubed bf16 matrix product on ``device`` (2 size^3 FLOPs each)."""
    a, b = (torch.randn(size, size, dtype=torch.bfloat16, device=device) for _ in range(2))
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def load_prm(args: argparse.Namespace) -> ProcessRewardModel:
    """Return the PRM: ``--model`` loaded, or built with random weights from its config (``--random-weights``)."""
    if not args.random_weights:
        return ProcessRewardModel.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    device = resolve_device(args.device)
    config = AutoConfig.from_pretrained(args.model, num_labels=1)
    model = AutoModelForSequenceClassification.from_config(config, dtype=resolve_dtype(args.dtype, device))
    return ProcessRewardModel(model.to(device).eval(), AutoTokenizer.from_pretrained(args.model))


def timed_score(prm: ProcessRewardModel, contexts: list[Context], shared: bool) -> tuple[float, list[float]]:
    """Return the seconds of one ``score`` call with ``shared_prefix`` set to ``shared``, and its scores."""
    prm.shared_prefix = shared
    start = time.perf_counter()
    scores = prm.score(contexts)
    if prm.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, scores


def computed_tokens(prm: ProcessRewardModel, contexts: list[Context]) -> int:
    """Return the tokens the shared path runs for ``contexts``: each group's prefix once, then the suffixes."""
    rows = [ids[ids != prm.tokenizer.pad_token_id].tolist() for ids in prm.encode(contexts)["input_ids"]]
    groups, alone = plan_groups(rows, prm.tokenizer.pad_token_id)
    return sum(g.prefix + sum(len(rows[r]) - g.prefix for r in g.rows) for g in groups) + sum(
        len(rows[r]) for r in alone
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SHARED_GGUF), help="a .gguf file, a model directory or a hub id")
    parser.add_argument("--split", default="valid_unseen")
    parser.add_argument("--states", type=int, default=8)
    parser.add_argument("--turn", type=int, default=10, help="the turn of random play whose state is scored")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--peak-size", type=int, default=4096, help="side of the matmul that measures the peak")
    parser.add_argument("--save-states", help="write the states found to this JSON-lines file")
    parser.add_argument("--load-states", help="read the states from this JSON-lines file instead of playing games")
    parser.add_argument("--random-weights", action="store_true", help="build --model (a config dir) untrained")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's; 1 resists a loaded machine)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    load_before = os.getloadavg()[0]
    if args.load_states:
        with open(args.load_states, encoding="utf-8") as f:
            states = [Context.from_dict(json.loads(line)) for line in f]
    else:
        states = random_play_states(args.split, args.states, args.turn, args.seed)
    if args.save_states:
        with open(args.save_states, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(state.to_dict()) + "\n" for state in states)
    prm = load_prm(args)
    params = sum(p.numel() for p in prm.model.parameters()) - prm.model.get_input_embeddings().weight.numel()
    peak = bf16_peak(args.peak_size, prm.device)
    warm = [states[0].propose(c) for c in states[0].admissible_commands[:4]]
    timed_score(prm, warm, shared=True)
    timed_score(prm, warm, shared=False)

    rows, largest_difference = [], 0.0
    for n in NS:
        seconds: dict[bool, list[float]] = {True: [], False: []}
        tokens, computed, tokenize = 0, 0, 0.0
        for index, state in enumerate(states):
            commands = random.Random(args.seed + index).sample(state.admissible_commands, n)
            contexts = [state.propose(command) for command in commands]
            start = time.perf_counter()
            tokens += int(prm.encode(contexts)["attention_mask"].sum())
            tokenize += time.perf_counter() - start
            computed += computed_tokens(prm, contexts)
            scores = {}
            for shared in (index % 2 == 0, index % 2 == 1):
                elapsed, scores[shared] = timed_score(prm, contexts, shared)
                seconds[shared].append(elapsed)
            largest_difference = max(largest_difference, *(abs(a - b) for a, b in zip(*scores.values(), strict=True)))
        on, off = sum(seconds[True]), sum(seconds[False])
        rows.append(
            f"| {n} | {tokens / len(states):.0f} | {computed / len(states):.0f} | {tokenize / len(states):.3f} "
            f"| {statistics.mean(seconds[False]):.3f} | {statistics.mean(seconds[True]):.3f} | {off / on:.1f}x "
            f"| {tokens / off:.0f} | {tokens / on:.0f} | {computed / on:.0f} "
            + f"| {100 * tokens / off * 2 * params / peak:.1f}% | {100 * computed / on * 2 * params / peak:.1f}% |"
        )

    lengths = [len(prm.encode([s.propose(s.admissible_commands[0])])["input_ids"][0]) for s in states]
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {machine()} (after the runs; {load_before:.2f} before); torch threads {torch.get_num_threads()}")
    print(
        f"states: {len(states)} at turn {args.turn} of seeded random play in {args.split} games, contexts "
        f"{min(lengths)}-{max(lengths)} tokens (mean {statistics.mean(lengths):.0f}); model: "
        f"{os.path.basename(args.model)}{' (random weights)' if args.random_weights else ''} ({args.dtype}, "
        f"{prm.device}), {params / 1e6:.1f}M parameters outside the embeddings"
    )
    print(f"bf16 matmul peak ({args.peak_size}^3 on {prm.device}): {peak / 1e9:.0f} GFLOP/s")
    print(f"largest |score on - score off| over all calls ({args.dtype}): {largest_difference:.2e}")
    print()
    print(
        "| N | tokens/turn | computed tokens/turn (on) | tokenize s/turn | s/turn off | s/turn on | speed-up "
        "| tokens/s off | tokens/s on | computed tokens/s on | peak used off | peak used on (computed) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
