"""A random peer-sampling overlay for the oracle membership mode.

Stands in for a partial-view service (HyParView's active view): every node gets a few
random symmetric neighbours, and after a crash is detected the survivors replace the
neighbours they lost, so nobody is stranded.
"""

from __future__ import annotations

import random


def random_overlay(n: int, degree: int, rng: random.Random) -> list[dict[int, None]]:
    """Symmetric random graph with mean degree ~``degree`` (k-out, k = degree/2)."""
    adj: list[dict[int, None]] = [{} for _ in range(n)]
    if n < 2:
        return adj
    half, odd = divmod(degree, 2)
    for i in range(n):
        picks = half + (1 if odd and rng.random() < 0.5 else 0)
        chosen = 0
        while chosen < picks and len(adj[i]) < n - 1:
            j = rng.randrange(n)
            if j != i and j not in adj[i]:
                adj[i][j] = None
                adj[j][i] = None
                chosen += 1
    return adj


def repair(
    adj: list[dict[int, None]], lost: set[int], live: list[int], target: int, rng: random.Random
) -> list[tuple[int, int]]:
    """Drop ``lost`` nodes; top up survivors below ``target`` with random live neighbours.

    Returns the new edges (so the caller can tell both ends).
    """
    added: list[tuple[int, int]] = []
    for i in live:
        for j in [j for j in adj[i] if j in lost]:
            del adj[i][j]
    for i in live:
        tries = 0
        while len(adj[i]) < target and tries < 10 * target:
            tries += 1
            j = live[rng.randrange(len(live))]
            if j != i and j not in adj[i]:
                adj[i][j] = None
                adj[j][i] = None
                added.append((i, j))
    return added
