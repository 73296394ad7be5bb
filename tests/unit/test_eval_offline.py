"""Offline harness: run_offline on synthetic tables, the CLI on real-data subsets, and the embedding cache."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from eval import offline, report
from eval.__main__ import main
from eval.embed_cache import CachedEmbedder
from router_service.data.table import RoutingTable
from router_service.domain import ExpertCard, Query
from router_service.routing.embedding import HashingEmbedder
from router_service.routing.strategies import base as strategy_base
from router_service.routing.strategies.base import RoutingStrategy, strategy_class

ROUTING_DIR = (
    Path(os.environ.get("COE_SHARED_DIR", Path(__file__).resolve().parents[2].parent / "shared")) / "data" / "routing"
)
needs_data = pytest.mark.skipif(not ROUTING_DIR.is_dir(), reason=f"shared routing data not found at {ROUTING_DIR}")


class TinyTradeoffStrategy(RoutingStrategy):
    """Nearest category centroid in embedding space, then argmax (1-λ)·quality − λ·normalised cost."""

    name = "tiny"
    learned = True
    needs_embedding = True
    has_tradeoff = True

    def __init__(self, *, cost_weight: float = 0.3, top_k: int = 1) -> None:
        super().__init__(top_k=top_k)
        self.cost_weight = cost_weight

    def fit(self, table: RoutingTable, embeddings: np.ndarray | None = None) -> TinyTradeoffStrategy:
        x = self._table_embeddings(table, embeddings)
        labels = np.array(table.categories or ["all"] * len(table))
        self.labels_ = sorted(set(labels))
        self.centroids_ = np.vstack([x[labels == c].mean(axis=0) for c in self.labels_])
        self.quality_ = np.vstack([table.score_matrix()[labels == c].mean(axis=0) for c in self.labels_])
        cost = table.cost_matrix().mean(axis=0)
        self.cost_ = cost / cost.max() if cost.max() > 0 else cost
        self.models_ = list(table.models)
        return self

    def score_experts(self, query: Query, experts: Sequence[ExpertCard]) -> Mapping[str, float]:
        group = int(np.argmax(self.centroids_ @ np.asarray(query.embedding)))
        weight = self.cost_weight if query.cost_weight is None else query.cost_weight
        values = (1 - weight) * self.quality_[group] - weight * self.cost_
        return dict(zip(self.models_, values.tolist()))


class CountingEmbedder(HashingEmbedder):
    def __init__(self, dim: int = 16) -> None:
        super().__init__(dim)
        self.calls = 0
        self.texts = 0

    def encode(self, texts):
        self.calls += 1
        self.texts += len(texts)
        return super().encode(texts)


@pytest.fixture
def tiny_registered(monkeypatch):
    monkeypatch.setitem(strategy_base._REGISTRY, "tiny", f"{__name__}:TinyTradeoffStrategy")
    return "tiny"


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("COE_CACHE_DIR", str(tmp_path / "embedding-cache"))


def synthetic_table(n: int, seed: int) -> RoutingTable:
    """Two task families with different best models and a cheap/expensive price split."""
    rng = np.random.default_rng(seed)
    prompts, categories, scores = [], [], []
    for i in range(n):
        math_task = i % 2 == 0
        prompts.append(f"compute the sum of {i} and {i + 3} please" if math_task else f"write a poem about item {i}")
        categories.append("math" if math_task else "poetry")
        p = [0.9, 0.2, 0.6] if math_task else [0.2, 0.9, 0.7]
        scores.append((rng.random(3) < p).astype(float))
    costs = np.tile([0.001, 0.002, 0.01], (n, 1))
    return RoutingTable(
        prompts=prompts, models=["mathy", "poet", "big"], scores=np.array(scores), costs=costs, categories=categories
    )


def available_default_strategies() -> list[str]:
    """Default strategies whose modules exist yet (others are being written in parallel)."""
    names = []
    for name in offline.default_strategies():
        try:
            strategy_class(name)
        except ImportError:
            continue
        names.append(name)
    return names


def check_results_schema(results: dict, strategies: Sequence[str]) -> None:
    assert isinstance(results["n_train"], int) and isinstance(results["n_test"], int) and results["n_test"] > 0
    assert isinstance(results["models"], list) and all(isinstance(m, str) for m in results["models"])
    base = results["baselines"]
    for key in ("oracle", "random"):
        assert set(base[key]) >= {"quality", "cost"}
    assert set(base["best_single"]) >= {"model", "quality", "cost"}
    assert base["best_single"]["model"] in results["models"]
    assert "aiq" in base["zero_router"]
    assert set(results["strategies"]) == set(strategies)
    oracle_q = base["oracle"]["quality"]
    for name, row in results["strategies"].items():
        assert set(row) >= {"quality", "cost", "aiq", "curve", "fit_seconds", "route_ms_per_prompt"}, name
        assert isinstance(row["curve"], list) and all(len(p) == 2 for p in row["curve"])
        assert row["aiq"] is None or 0.0 <= row["aiq"] <= 1.0
        # The oracle picks the best model per prompt, so no router can beat it on the same prompts.
        assert oracle_q + 1e-12 >= row["quality"] >= 0.0, name
        assert all(oracle_q + 1e-12 >= q >= 0.0 for _, q in row["curve"]), name
    for value in (base["oracle"]["quality"], base["best_single"]["quality"], base["random"]["quality"]):
        assert 0.0 <= value <= oracle_q + 1e-12


# ----------------------------------------------------------------------------------------- run_offline
def test_holdout_run_shapes_and_bounds(tiny_registered) -> None:
    train, test = synthetic_table(120, seed=1), synthetic_table(60, seed=2)
    lambdas = (0.0, 0.25, 0.5, 0.75, 1.0)
    results = offline.run_offline(
        train, test, strategies=["tiny"], embedder=HashingEmbedder(64), seed=3, lambdas=lambdas
    )
    check_results_schema(results, ["tiny"])
    assert (results["n_train"], results["n_test"]) == (120, 60)
    row = results["strategies"]["tiny"]
    assert len(row["curve"]) == len(lambdas) and row["cost_weight"] == 0.3
    assert row["aiq"] is not None
    # λ = 1 ignores quality: everything to the cheapest model, 60 calls at $0.001.
    assert row["curve"][-1][0] == pytest.approx(60 * 0.001)
    # The category-aware router beats the best single model at λ = 0 on this table.
    assert row["curve"][0][1] > results["baselines"]["best_single"]["quality"]
    assert results["baselines"]["zero_router"]["aiq"] is not None


def test_cv_pools_every_prompt_once(tiny_registered) -> None:
    table = synthetic_table(90, seed=5)
    results = offline.run_offline(
        table, strategies=["tiny"], embedder=HashingEmbedder(64), cv=3, seed=0, lambdas=(0.0, 1.0)
    )
    check_results_schema(results, ["tiny"])
    assert results["n_test"] == 90 and results["cv"] == 3
    assert len(results["baselines"]["best_single"]["models_per_fold"]) == 3
    assert sum(results["strategies"]["tiny"]["choices"].values()) == 90


def test_non_tradeoff_strategy_has_point_curve_and_null_aiq() -> None:
    results = offline.run_offline(
        synthetic_table(40, 1), synthetic_table(20, 2), strategies=["best_single"], lambdas=(0.0, 1.0)
    )
    row = results["strategies"]["best_single"]
    assert row["aiq"] is None and row["curve"] == [[row["cost"], row["quality"]]]


def test_tables_without_costs_cost_one_per_call_and_no_aiq(tiny_registered) -> None:
    train, test = synthetic_table(40, 1), synthetic_table(20, 2)
    train.costs = test.costs = None
    results = offline.run_offline(train, test, strategies=["tiny"], embedder=HashingEmbedder(32), lambdas=(0.0, 1.0))
    assert results["baselines"]["oracle"]["cost"] == 20.0
    assert results["strategies"]["tiny"]["aiq"] is None and results["baselines"]["zero_router"]["aiq"] is None


def test_run_offline_rejects_test_and_cv_together() -> None:
    with pytest.raises(offline.OfflineConfigError):
        offline.run_offline(synthetic_table(10, 1), synthetic_table(10, 2), strategies=[], cv=2)


def test_write_outputs(tmp_path: Path, tiny_registered) -> None:
    results = offline.run_offline(
        synthetic_table(40, 1),
        synthetic_table(20, 2),
        strategies=["tiny"],
        embedder=HashingEmbedder(32),
        lambdas=(0.0, 0.5, 1.0),
    )
    paths = report.write_outputs(results, tmp_path / "out")
    assert json.loads(paths["results"].read_text())["n_test"] == 20
    report_text = paths["report"].read_text()
    for word in ("oracle", "best_single", "random", "zero_router", "tiny", "gap to oracle", "missing"):
        assert word in report_text
    assert paths["pareto"].stat().st_size > 10_000


# ----------------------------------------------------------------------------------------- CLI on real data
def head_csv(source: Path, target: Path, rows: int) -> Path:
    csv.field_size_limit(2**31 - 1)
    with open(source, newline="", encoding="utf-8") as src, open(target, "w", newline="", encoding="utf-8") as dst:
        reader, writer = csv.reader(src), csv.writer(dst)
        for i, row in enumerate(reader):
            if i > rows:
                break
            writer.writerow(row)
    return target


@needs_data
def test_cli_cv_on_routerbench_subset(tmp_path: Path, tiny_registered) -> None:
    arc = head_csv(ROUTING_DIR / "routerbench" / "arc_challenge_train.csv", tmp_path / "arc_challenge_train.csv", 100)
    mbpp = head_csv(ROUTING_DIR / "routerbench" / "mbpp_train.csv", tmp_path / "mbpp_train.csv", 50)
    names = available_default_strategies() + ["tiny"]
    out = tmp_path / "out"
    code = main(
        [
            "offline",
            "--train",
            str(arc),
            str(mbpp),
            "--cv",
            "3",
            "--embedder",
            "hashing-256",
            "--strategies",
            ",".join(names),
            "--out",
            str(out),
            "--seed",
            "1",
            "--grid",
            "6",
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    check_results_schema(results, names)
    assert results["n_test"] == 150 and len(results["models"]) == 11
    assert results["strategies"]["tiny"]["aiq"] is not None and len(results["strategies"]["tiny"]["curve"]) == 6
    assert (out / "report.md").exists() and (out / "pareto.png").exists()

    # A second run is served from the on-disk embedding cache.
    code = main(
        [
            "offline",
            "--train",
            str(arc),
            str(mbpp),
            "--cv",
            "3",
            "--embedder",
            "hashing-256",
            "--strategies",
            "tiny",
            "--out",
            str(out),
            "--no-plot",
        ]
    )
    assert code == 0
    assert json.loads((out / "results.json").read_text())["embedding_cache"]["misses"] == 0


@needs_data
def test_cli_holdout_on_model7_subset(tmp_path: Path, tiny_registered) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    train_files, test_files = [], []
    for name in ("gsm8k-train", "mmlu_train"):
        rows = json.loads((ROUTING_DIR / "model7" / f"{name}.json").read_text())
        train_files.append(tmp_path / "train" / f"{name}.json")
        test_files.append(tmp_path / "test" / f"{name.replace('train', 'test')}.json")
        train_files[-1].write_text(json.dumps(rows[:60]))
        test_files[-1].write_text(json.dumps(rows[60:100]))
    names = available_default_strategies() + ["tiny"]
    out = tmp_path / "out"
    code = main(
        [
            "offline",
            "--train",
            *map(str, train_files),
            "--test",
            *map(str, test_files),
            "--embedder",
            "hashing-256",
            "--strategies",
            ",".join(names),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    check_results_schema(results, names)
    assert (results["n_train"], results["n_test"]) == (120, 80)
    assert results["baselines"]["oracle"]["cost"] == 80  # no prices: one unit per call
    assert results["strategies"]["tiny"]["aiq"] is None


# ----------------------------------------------------------------------------------------- CLI errors
def test_cli_bad_file_prints_error_and_exits_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "gsm8k-train.json"
    bad.write_text(json.dumps([{"question": "q", "scores": {"a": 1}}, {"question": "q2", "scores": {"a": 7}}]))
    assert main(["offline", "--train", str(bad), "--cv", "2", "--embedder", "hashing-16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(bad) in err and "row 2" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--cv", "2", "--strategies", "no_such_strategy"], "unknown strategy 'no_such_strategy'"),
        (["--cv", "2", "--test", "X"], "cannot be combined with --test"),
        ([], "give --test"),
        (["--cv", "50"], "needs at least 50 prompts"),
        (["--cv", "2", "--models", "a,zzz"], "models ['zzz'] are missing"),
    ],
)
def test_cli_usage_errors_exit_2(tmp_path: Path, capsys, extra, message) -> None:
    good = tmp_path / "t.json"
    good.write_text(json.dumps([{"question": f"q{i}", "scores": {"a": 1, "b": 0}} for i in range(4)]))
    assert (
        main(["offline", "--train", str(good), "--embedder", "hashing-16", "--out", str(tmp_path / "o"), *extra]) == 2
    )
    assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- embedding cache
def test_cached_embedder_second_instance_reads_disk(tmp_path: Path) -> None:
    texts = [f"prompt number {i}" for i in range(10)] + ["prompt number 3"]
    first_inner = CountingEmbedder()
    first = CachedEmbedder(first_inner, tmp_path / "c", batch_size=4, save_every=4, progress=False)
    vectors = first.encode(texts)
    assert vectors.shape == (11, 16) and vectors.dtype == np.float32
    assert first_inner.texts == 10  # the duplicate is embedded once
    np.testing.assert_allclose(vectors, HashingEmbedder(16).encode(texts), rtol=1e-6)

    second_inner = CountingEmbedder()
    second = CachedEmbedder(second_inner, tmp_path / "c", progress=False)
    np.testing.assert_array_equal(second.encode(texts), vectors)
    assert second_inner.calls == 0 and second.hits == 11
    second.encode(["a new prompt"] + texts[:2])
    assert second_inner.texts == 1
    assert second.name == "hashing-16"


def test_cache_is_per_model_and_env_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("COE_CACHE_DIR", str(tmp_path / "env-cache"))
    small, large = (
        CachedEmbedder(HashingEmbedder(8), progress=False),
        CachedEmbedder(HashingEmbedder(32), progress=False),
    )
    assert small.encode(["same text"]).shape == (1, 8)
    assert large.encode(["same text"]).shape == (1, 32)  # another model never gets the 8-dim vector
    assert small.directory.parent == tmp_path / "env-cache" and small.directory != large.directory


def test_cache_compacts_many_shards(tmp_path: Path) -> None:
    cache = CachedEmbedder(HashingEmbedder(8), tmp_path, max_shards=3, progress=False)
    for i in range(6):
        cache.encode([f"text {i}"])
    assert len(list(cache.directory.glob("shard-*.npz"))) == 6
    reopened = CachedEmbedder(HashingEmbedder(8), tmp_path, max_shards=3, progress=False)
    assert reopened.cached_count() == 6
    assert len(list(reopened.directory.glob("shard-*.npz"))) == 1
    assert not math.isnan(float(reopened.encode(["text 5"]).sum()))
