"""The k-NN index: a full scan below its threshold, an inverted-file index above it, and cost_aware on both."""

import numpy as np

from router_service.data.table import RoutingTable
from router_service.domain import ExpertCard, Query
from router_service.routing.embedding import l2_normalise
from router_service.routing.knn_index import KnnIndex, top_of
from router_service.routing.strategies.cost_aware import CostAwareStrategy


def clustered(n: int, dim: int = 32, centres: int = 40, seed: int = 0) -> np.ndarray:
    """Unit vectors around a few centres, like prompt embeddings of a few tasks."""
    rng = np.random.default_rng(seed)
    middle = l2_normalise(rng.normal(size=(centres, dim)))
    return l2_normalise(middle[rng.integers(0, centres, n)] + 0.3 * rng.normal(size=(n, dim)) / np.sqrt(dim))


def test_small_tables_are_scanned_exactly():
    x = clustered(500)
    index = KnnIndex(x, exact_max_rows=1000)
    assert index.kind == "exact"
    query = x[7]
    found, sims = index.search(query, 10)
    assert set(found) == set(np.argsort(-(x @ query))[:10])
    assert np.allclose(sims, x[found] @ query)


def test_large_tables_use_the_inverted_file_and_scan_a_fraction():
    x = clustered(4000)
    index = KnnIndex(x, exact_max_rows=1000, n_probe=4)
    assert index.kind == "ivf" and index.centroids is not None
    assert len(index.centroids) == round(np.sqrt(4000))
    probed = np.sort(np.diff(index.offsets))[::-1][:4].sum()
    assert probed < len(x) / 2  # a query scans at most the 4 largest lists, far below the table
    # Recall against the full scan, on held-out queries from the same distribution.
    queries = clustered(100, seed=1)
    recall = np.mean([len(set(index.search(q, 10)[0]) & set(np.argsort(-(x @ q))[:10])) / 10 for q in queries])
    assert recall >= 0.9


def test_index_returns_at_least_k_even_when_probed_lists_are_small():
    x = clustered(3000)
    index = KnnIndex(x, exact_max_rows=100, n_probe=1)
    found, _ = index.search(x[0], 200)
    assert len(found) == 200 and len(set(found)) == 200


def test_top_of_picks_the_nearest_of_a_search():
    indices, sims = np.array([5, 9, 2, 7]), np.array([0.1, 0.9, 0.5, 0.7])
    assert set(top_of((indices, sims), 2)) == {9, 7}


def test_cost_aware_on_the_index_decides_like_the_full_scan():
    rng = np.random.default_rng(3)
    x = clustered(3000)
    models = ["a", "b", "c"]
    # Each centre of the embedding space has a best model, so the right neighbours matter.
    best = x[:, :3].argmax(axis=1)
    scores = np.where(np.arange(3)[None, :] == best[:, None], 0.9, 0.2) + 0.05 * rng.random((3000, 3))
    table = RoutingTable(prompts=[f"p{i}" for i in range(3000)], models=models, scores=scores)
    exact = CostAwareStrategy(estimator="knn", k=20, knn_exact_max_rows=10_000).fit(table, embeddings=x)
    indexed = CostAwareStrategy(estimator="knn", k=20, knn_exact_max_rows=1000).fit(table, embeddings=x)
    assert exact.knn_index_.kind == "exact" and indexed.knn_index_.kind == "ivf"
    cards = [ExpertCard(id=m) for m in models]
    queries = clustered(200, seed=5)

    def chosen(strategy, q):
        return strategy.route(Query("q", embedding=q), cards).expert_ids

    same = np.mean([chosen(exact, q) == chosen(indexed, q) for q in queries])
    assert same >= 0.97
