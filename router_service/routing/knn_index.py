"""Nearest training prompts of one query: a full scan for small tables, an inverted-file index past that.

A k-NN router compares each prompt with every training prompt: one (n × d) mat-vec per decision, linear
in the table. Past `exact_max_rows` training rows (`bench/fit_scaling.py` measures where a scan starts to
cost more than the index) the rows are clustered by k-means into about √n lists, and a query scans only
the rows of the `n_probe` lists whose centroids are nearest: about n_probe·√n rows instead of n (the IVF
index of FAISS, in numpy and scikit-learn). It is approximate: a true neighbour in an unprobed list is
missed. `bench/fit_scaling.py` prints the share of decisions it keeps equal to the full scan.

Every search is of one query alone (a GEMV, never a batched GEMM), so a decision never depends on which
other prompts were routed with it.
"""

from __future__ import annotations

import math

import numpy as np

EXACT_MAX_ROWS = 20_000  # measured: see README "Performance", `bench/fit_scaling.py`


class KnnIndex:
    """Top-k cosine neighbours among unit-length training rows `x` (n, d)."""

    def __init__(
        self,
        x: np.ndarray,
        *,
        exact_max_rows: int = EXACT_MAX_ROWS,
        n_lists: int | None = None,
        n_probe: int = 16,
        seed: int = 0,
    ) -> None:
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.n_rows = len(x)
        self.n_probe = n_probe
        self.kind = "exact" if len(x) <= exact_max_rows else "ivf"
        self.centroids: np.ndarray | None = None
        self.order: np.ndarray | None = None  # training-row index of each stored row (None: stored in order)
        if self.kind == "ivf":
            self._build(x, n_lists or round(math.sqrt(len(x))), seed)
        else:
            self.rows = x
            self.offsets = np.array([0, len(x)])

    def _build(self, x: np.ndarray, n_lists: int, seed: int) -> None:
        from sklearn.cluster import MiniBatchKMeans

        kmeans = MiniBatchKMeans(n_clusters=n_lists, random_state=seed, batch_size=4096, n_init=1)
        labels = kmeans.fit_predict(x)
        centroids = kmeans.cluster_centers_.astype(np.float32)
        self.centroids = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        # Rows stored list by list, so a probed list is one contiguous slice (no copy per query).
        self.order = np.argsort(labels, kind="stable")
        self.rows = np.ascontiguousarray(x[self.order])
        self.offsets = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=n_lists))])

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices into the training rows, cosine similarities) of the k nearest rows, unordered."""
        query = np.asarray(query, dtype=np.float32)
        if self.centroids is None:
            sims = self.rows @ query
            top = _top(sims, k)
            return top, sims[top]
        lists = np.argsort(-(self.centroids @ query))
        probe = min(self.n_probe, len(lists))
        # Probe further lists until there are at least k candidates (small lists on a skewed table).
        while sum(self.offsets[c + 1] - self.offsets[c] for c in lists[:probe]) < k and probe < len(lists):
            probe += 1
        chosen = np.sort(lists[:probe])
        starts = self.offsets[chosen]
        sims = np.concatenate([self.rows[a:b] @ query for a, b in zip(starts, self.offsets[chosen + 1])])
        positions = np.concatenate([np.arange(a, b) for a, b in zip(starts, self.offsets[chosen + 1])])
        top = _top(sims, k)
        assert self.order is not None
        return self.order[positions[top]], sims[top]


def _top(sims: np.ndarray, k: int) -> np.ndarray:
    k = min(k, len(sims))
    return np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))


def top_of(neighbours: tuple[np.ndarray, np.ndarray], k: int) -> np.ndarray:
    """The k nearest of a `search` result (for estimators whose k is below the searched one)."""
    indices, sims = neighbours
    return indices[_top(sims, k)]
