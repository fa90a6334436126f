"""`prm-gym audit-prm`'s scoring: one context per call (on the cached prefix) vs one forward per episode.

A reward model (default: the AgentPRM reproduction's Q0) scores the distinct (state, action)s of the first
``--episodes`` episodes of an evaluation folder both ways, as the audit did before and does now
(:func:`prm_gym.prm.audit.episode_scores`): the seconds per action, and how far the two sets of scores are apart
(bf16 rounding on renders of ~1,000 tokens).

    cd benchmarks && python audit_scoring.py --episodes 8 --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch
from common import machine

from prm_gym.prm.audit import episode_scores
from prm_gym.prm.model import ProcessRewardModel
from prm_gym.prm.targets import TargetsConfig, compute_targets
from prm_gym.rollout import load_episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default="../runs/agentprm-cpu/eval/pi0-s0", help="episodes (prm-gym eval)")
    parser.add_argument("--reward-model", default="agentprm-cpu/look-only/q0/model", help="a train-prm folder")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    episodes = load_episodes(args.folder)[: args.episodes]
    rows = compute_targets(episodes)
    prm = ProcessRewardModel.from_pretrained(args.reward_model, device="cpu")
    print(machine(), f"| {prm.model.dtype}, {len(episodes)} episodes, {len(rows)} distinct (state, action)s")

    start = time.perf_counter()
    whole = episode_scores(prm, episodes, rows, TargetsConfig())
    seconds_whole = time.perf_counter() - start
    prm.prefix_cache.clear()
    start = time.perf_counter()
    per_call = [prm.score([row.context])[0] for row in rows]
    seconds_per_call = time.perf_counter() - start

    gaps = [abs(a - b) for a, b in zip(whole, per_call, strict=True)]
    print(f"one context per call: {seconds_per_call:.1f} s ({seconds_per_call / len(rows):.3f} s per action)")
    print(f"one forward per episode: {seconds_whole:.1f} s ({seconds_whole / len(rows):.3f} s per action), "
          f"{seconds_per_call / seconds_whole:.1f}x")  # fmt: skip
    print(f"|score gap|: max {max(gaps):.4f}, mean {sum(gaps) / len(gaps):.4f}")


if __name__ == "__main__":
    main()
