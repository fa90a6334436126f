"""Token sequences merged into a trie, to run sequences that start alike on one forward.

A causal model's output at a token depends on that token and the ones before it only. So sequences that share
a start (the answers ``ACTION: go to cabinet 1`` and ``ACTION: go to cabinet 2`` after one prompt; the contexts
(s, a) and (s', a') of one episode, each render the start of the next) can run as one row: each trie node is a
token, placed at its depth (the position it has in every sequence through it) and attending only to its
ancestors and itself (a 4D mask from :meth:`TokenTrie.ancestry`). Every node's keys, values, hidden state and
logits are then those of a forward of any one sequence through it, and the shared tokens run once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["TokenTrie", "additive_mask"]


class TokenTrie:
    """A trie of token sequences, grown with :meth:`add`; nodes are numbered in order of creation.

    Example:
        >>> trie = TokenTrie()
        >>> [trie.add(s) for s in ([7, 1, 2], [7, 1, 3], [8])], trie.new_nodes([7, 5, 6])
        ([[0, 1, 2], [0, 1, 3], [4]], 2)
        >>> trie.tokens, trie.parents, trie.depths
        ([7, 1, 2, 3, 8], [-1, 0, 1, 1, -1], [0, 1, 2, 2, 0])
        >>> trie.ancestry().int().tolist()[3]  # node 3 sees nodes 0 and 1 and itself
        [1, 1, 0, 1, 0]
    """

    def __init__(self) -> None:
        #: Each node's token, its parent node (-1: none, a first token) and its depth (its index in the
        #: sequences through it). A parent comes before its children.
        self.tokens: list[int] = []
        self.parents: list[int] = []
        self.depths: list[int] = []
        self._children: dict[tuple[int, int], int] = {}  # (parent, token) -> node

    def __len__(self) -> int:
        """Return the number of nodes: the tokens a forward of the trie runs."""
        return len(self.tokens)

    def add(self, sequence: Sequence[int]) -> list[int]:
        """Add ``sequence``; return its nodes, in order (its last node is where its last token's output is)."""
        path: list[int] = []
        for depth, token in enumerate(sequence):
            parent = path[-1] if path else -1
            node = self._children.get((parent, token))
            if node is None:
                node = self._children[parent, token] = len(self.tokens)
                self.tokens.append(token)
                self.parents.append(parent)
                self.depths.append(depth)
            path.append(node)
        return path

    def new_nodes(self, sequence: Sequence[int]) -> int:
        """Return how many nodes :meth:`add` of ``sequence`` would create (its tokens after its longest match)."""
        parent = -1
        for depth, token in enumerate(sequence):
            node = self._children.get((parent, token))
            if node is None:
                return len(sequence) - depth
            parent = node
        return 0

    def ancestry(self) -> torch.Tensor:
        """Return the (nodes, nodes) bool matrix of what each node attends to: its ancestors and itself."""
        sees = torch.eye(len(self.tokens), dtype=torch.bool)
        for node, parent in enumerate(self.parents):
            if parent >= 0:
                sees[node] |= sees[parent]
        return sees


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Return the additive attention mask of a bool ``allowed`` (0 where allowed, the dtype's minimum elsewhere).

    Example:
        >>> additive_mask(torch.tensor([[True, False]]), torch.float32).tolist()[0][0] == 0.0
        True
    """
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
