"""The neighbour graph: k-regular, symmetric, loop-free, reproducible from its public seed."""

from __future__ import annotations

import pytest

from fedpeft.common.crypto.secagg.graph import neighbour_graph

SEED = b"graph-seed-0001"


def _ids(count: int) -> list[int]:
    return [1000 + 37 * i for i in range(count)]


def _connected(graph: dict[int, tuple[int, ...]]) -> bool:
    start = next(iter(graph))
    seen, frontier = {start}, [start]
    while frontier:
        for peer in graph[frontier.pop()]:
            if peer not in seen:
                seen.add(peer)
                frontier.append(peer)
    return len(seen) == len(graph)


@pytest.mark.parametrize(
    ("count", "degree"),
    [(3, 2), (5, 2), (6, 3), (10, 4), (20, 10), (21, 6), (50, 12), (64, 11), (7, 6), (7, 10)],
)
def test_graph_is_regular_symmetric_and_loop_free(count: int, degree: int) -> None:
    graph = neighbour_graph(_ids(count), degree, SEED)
    assert set(graph) == set(_ids(count))
    expected = min(degree, count - 1)
    for node, peers in graph.items():
        assert len(peers) == expected == len(set(peers))
        assert node not in peers
        assert all(node in graph[peer] for peer in peers)
    assert _connected(graph)


def test_degree_at_least_n_minus_1_gives_the_complete_graph() -> None:
    ids = _ids(6)
    for degree in (5, 6, 100):
        graph = neighbour_graph(ids, degree, SEED)
        assert all(set(peers) == set(ids) - {node} for node, peers in graph.items())


def test_single_node_has_no_neighbours() -> None:
    assert neighbour_graph([42], 0, SEED) == {42: ()}


def test_graph_depends_on_the_seed_not_on_the_order_of_ids() -> None:
    ids = _ids(30)
    graph = neighbour_graph(ids, 6, SEED)
    assert neighbour_graph(list(reversed(ids)), 6, SEED) == graph
    assert neighbour_graph(ids, 6, b"another seed") != graph


def test_odd_degree_times_nodes_is_refused() -> None:
    with pytest.raises(ValueError, match="no 3-regular graph exists on 7 nodes"):
        neighbour_graph(_ids(7), 3, SEED)


@pytest.mark.parametrize("ids", [[1, 2, 2, 3], [0, 1, 2], []])
def test_invalid_node_sets_are_refused(ids: list[int]) -> None:
    with pytest.raises(ValueError, match="distinct|not a node id|at least one node"):
        neighbour_graph(ids, 2, SEED)
