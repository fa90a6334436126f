"""Answer tokens per state, packed end to end vs as a token trie (:class:`prm_gym.prm.token_trie.TokenTrie`).

HFAgent's loglik mode scores the answer ``ACTION: <command>`` (and the end of turn) of every admissible command
of a state after its prompt. This counts, over the states of played episodes, the answer tokens run per state
before (every answer whole) and now (their trie: answers that start alike share those tokens).

    cd benchmarks && python answer_trie_tokens.py --folder ../runs/agentprm-cpu/eval/pi0-s0 --episodes 20
"""

from __future__ import annotations

import argparse

from common import SHARED_GGUF
from transformers import AutoTokenizer

from prm_gym.checkpoints import resolve_source
from prm_gym.prm.prompt import PromptConfig, encode_answers
from prm_gym.prm.token_trie import TokenTrie
from prm_gym.rollout import load_episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", required=True, help="episodes (prm-gym eval or collect output)")
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()
    import torch

    tokenizer = AutoTokenizer.from_pretrained(resolve_source(SHARED_GGUF, dtype=torch.bfloat16))
    states = packed = trie = 0
    for episode in load_episodes(args.folder)[: args.episodes]:
        for step in episode.steps:
            answers = encode_answers(step.context.admissible_commands, tokenizer, PromptConfig())
            states += 1
            packed += sum(map(len, answers))
            tokens = TokenTrie()
            for answer in answers:
                tokens.add(answer)
            trie += len(tokens)
    print(f"{states} states: {packed / states:.1f} answer tokens per state packed, {trie / states:.1f} as a trie "
          f"({packed / trie:.2f}x fewer)")  # fmt: skip


if __name__ == "__main__":
    main()
