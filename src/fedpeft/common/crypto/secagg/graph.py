"""Who shares secrets with whom: SecAgg+'s sparse, random, regular communication graph.

Full SecAgg makes every institution secret-share with every other, which costs O(n^2)
messages per round. SecAgg+ restricts sharing and pairwise masking to the edges of a
k-regular graph; Bell et al. show that a random graph of degree logarithmic in n keeps
SecAgg's privacy and dropout guarantees with high probability, given bounds on the share of
dropped and colluding institutions. The graph is a Harary graph (node i is joined
to i +- 1 .. i +- k/2 on a ring, plus the opposite node when k is odd) laid over a random
permutation, so which institutions end up adjacent is unpredictable before the server picks
the seed, yet anyone holding the seed can recompute the graph.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from fedpeft.common.crypto.secagg.nodes import distinct_node_ids, node_id_bytes


def neighbour_graph(
    node_ids: Sequence[int], degree: int, seed: bytes
) -> dict[int, tuple[int, ...]]:
    """Each node's neighbours (sorted) in a random `degree`-regular undirected graph.

    `degree >= len(node_ids) - 1` gives the complete graph. The layout depends only on the set
    of ids and on `seed` (public), not on the order of `node_ids`.
    """
    nodes = sorted(distinct_node_ids(node_ids, "neighbour_graph"))
    if not isinstance(seed, bytes):
        raise TypeError(f"seed must be bytes, got {type(seed).__name__}")
    if type(degree) is not int:
        raise TypeError(f"degree must be an int, got {type(degree).__name__}")
    count = len(nodes)
    if count == 0:
        raise ValueError("neighbour_graph needs at least one node")
    if degree >= count - 1:
        return {node: tuple(other for other in nodes if other != node) for node in nodes}
    if degree < 1:
        raise ValueError(f"degree must be at least 1, got {degree}")
    if degree * count % 2:
        raise ValueError(
            f"no {degree}-regular graph exists on {count} nodes (degree x nodes must be even); "
            "choose an even number of neighbours"
        )
    ring = sorted(nodes, key=lambda node: hmac.digest(seed, node_id_bytes(node), hashlib.sha256))
    offsets = list(range(1, degree // 2 + 1))
    if degree % 2:
        offsets.append(count // 2)
    adjacency: dict[int, set[int]] = {node: set() for node in nodes}
    for position, node in enumerate(ring):
        for offset in offsets:
            other = ring[(position + offset) % count]
            adjacency[node].add(other)
            adjacency[other].add(node)
    return {node: tuple(sorted(adjacency[node])) for node in nodes}
