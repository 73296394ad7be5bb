"""Router artifacts: round trip, header, and clear ConfigErrors for bad files."""

from __future__ import annotations

import pickle

import joblib
import pytest

from router_service.domain import Query
from router_service.errors import ConfigError, NotFittedError
from router_service.routing.artifact import (
    FORMAT_VERSION,
    expert_mismatch,
    load_artifact,
    read_artifact_info,
    save_artifact,
)
from router_service.routing.embedding import HashingEmbedder
from router_service.routing.strategies.base import get_strategy
from router_service.routing.strategies.skill import LLMSkillAnnotator
from tests.unit.test_strategies import MODELS, held_out, make_experts, make_table


@pytest.fixture(scope="module")
def fitted_category():
    return get_strategy("category").set_embedder(HashingEmbedder(dim=128)).fit(make_table())


def test_header_records_what_the_router_needs(fitted_category, tmp_path):
    path = save_artifact(fitted_category, tmp_path / "sub" / "c.joblib", metadata={"train": ["t.json"]})
    info = read_artifact_info(path)
    assert info["strategy"] == "category"
    assert info["format_version"] == FORMAT_VERSION
    assert info["fitted_experts"] == MODELS
    assert info["embedder"] == "hashing-128"
    assert info["metadata"] == {"train": ["t.json"]}
    assert "state" not in info
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temp file left behind


def test_embedder_is_dropped_on_save_and_injected_on_load(fitted_category, tmp_path):
    path = save_artifact(fitted_category, tmp_path / "c.joblib")
    assert joblib.load(path)["state"].embedder is None
    assert fitted_category.embedder is not None  # the live object keeps its embedder
    loaded = load_artifact(path)
    assert isinstance(loaded.embedder, HashingEmbedder) and loaded.embedder.dim == 128
    mine = HashingEmbedder(dim=128)
    assert load_artifact(path, embedder=mine).embedder is mine
    prompts = held_out("math", 5)
    assert [loaded.route(Query(text=p), make_experts()).expert_ids for p in prompts] == [
        fitted_category.route(Query(text=p), make_experts()).expert_ids for p in prompts
    ]


def test_wrong_embedder_is_refused(fitted_category, tmp_path):
    path = save_artifact(fitted_category, tmp_path / "c.joblib")
    with pytest.raises(ConfigError, match="hashing-128"):
        load_artifact(path, embedder=HashingEmbedder(dim=64))


def test_expected_strategy_is_checked(fitted_category, tmp_path):
    path = save_artifact(fitted_category, tmp_path / "c.joblib")
    assert load_artifact(path, strategy="category").name == "category"
    with pytest.raises(ConfigError, match="config asks for 'skill'"):
        load_artifact(path, strategy="skill")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_artifact(tmp_path / "nope.joblib")
    assert info.value.code == "artifact_missing"


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", b"\x80\x04garbage"])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "bad.joblib"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="corrupt") as info:
        load_artifact(path)
    assert info.value.code == "artifact_corrupt"


def test_truncated_artifact(fitted_category, tmp_path):
    path = save_artifact(fitted_category, tmp_path / "c.joblib")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ConfigError, match="corrupt"):
        load_artifact(path)


def test_foreign_pickle(tmp_path):
    path = tmp_path / "other.joblib"
    joblib.dump({"weights": [1, 2, 3]}, path)
    with pytest.raises(ConfigError, match="not a coe-router-artifact"):
        load_artifact(path)
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ConfigError):
        load_artifact(path)


def test_wrong_version(fitted_category, tmp_path):
    path = save_artifact(fitted_category, tmp_path / "c.joblib")
    payload = joblib.load(path)
    payload["format_version"] = FORMAT_VERSION + 1
    joblib.dump(payload, path)
    with pytest.raises(ConfigError, match="refit") as info:
        load_artifact(path)
    assert info.value.code == "artifact_version"


def test_unfitted_strategy_cannot_be_saved(tmp_path):
    with pytest.raises(NotFittedError):
        save_artifact(get_strategy("cost_aware"), tmp_path / "x.joblib")


def test_strategy_fitted_without_embedder_needs_a_name(tmp_path):
    table = make_table()
    strategy = get_strategy("cost_aware").fit(table, embeddings=HashingEmbedder().encode(table.prompts))
    path = save_artifact(strategy, tmp_path / "a.joblib")
    with pytest.raises(ConfigError, match="no embedder"):
        load_artifact(path)
    assert load_artifact(path, embedder=HashingEmbedder()).embedder is not None
    path = save_artifact(strategy, tmp_path / "b.joblib", embedder_name="hashing-256")
    assert load_artifact(path).embedder.name == "hashing-256"


def test_llm_annotator_callable_is_not_pickled(tmp_path):
    strategy = get_strategy("skill", annotator=LLMSkillAnnotator(lambda prompt: "algebra, geometry"))
    strategy.set_embedder(HashingEmbedder()).fit(make_table(30))
    loaded = load_artifact(save_artifact(strategy, tmp_path / "s.joblib"))
    with pytest.raises(RuntimeError, match="set_complete"):
        loaded.route(Query(text="x"), make_experts())
    loaded.annotator_.set_complete(lambda prompt: "algebra")
    assert loaded.route(Query(text="x"), make_experts()).details["skills"] == ["algebra"]


def test_expert_mismatch(fitted_category):
    assert expert_mismatch(fitted_category, ["math-x", "new"]) == {
        "unknown": ["new"],
        "missing": ["code-x", "general", "premium"],
    }
    assert expert_mismatch(get_strategy("random"), ["a"]) == {"unknown": [], "missing": []}


# -- the fit CLI ----------------------------------------------------------------------------------
def _write_json_table(path, n=60):
    import json

    table = make_table(n, costs=False)
    rows = [
        {"question": p, "scores": dict(zip(table.models, map(float, s))), "category": c}
        for p, s, c in zip(table.prompts, table.scores, table.categories)
    ]
    path.write_text(json.dumps(rows))
    return path


def test_fit_cli_writes_a_loadable_artifact(tmp_path, capsys):
    from router_service.cli.fit import main

    train = _write_json_table(tmp_path / "t.json")
    out = tmp_path / "routers" / "c.joblib"
    rc = main(
        [
            "--strategy",
            "category",
            "--train",
            str(train),
            "--embedder",
            "hashing-256",
            "--models",
            "math-x,general",
            "--param",
            "confidence_threshold=0.2",
            "--param",
            'category_map={"math": "general"}',
            "--out",
            str(out),
        ]
    )
    assert rc == 0 and "fitted 'category' on 60 prompts" in capsys.readouterr().out
    loaded = load_artifact(out, strategy="category")
    assert loaded.fitted_experts == ["math-x", "general"]
    assert loaded.confidence_threshold == 0.2 and loaded.category_map == {"math": "general"}
    assert read_artifact_info(out)["metadata"]["rows"] == 60


def test_fit_cli_scoring_and_clustering_reach_the_fit(tmp_path, capsys):
    """`--categories cluster` hides the labels (the category strategy clusters, here into 3), and the
    artifact's metadata records both choices."""
    from router_service.cli.fit import main

    train = _write_json_table(tmp_path / "t.json")
    out = tmp_path / "c.joblib"
    args = ["--strategy", "category", "--train", str(train), "--embedder", "hashing-256"]
    extra = ["--scoring", "accuracy", "--categories", "cluster", "--param", "n_clusters=3", "--out", str(out)]
    assert main(args + extra) == 0
    loaded = load_artifact(out, strategy="category")
    assert loaded.clustered_ and len(loaded.categories_) == 3
    metadata = read_artifact_info(out)["metadata"]
    assert (metadata["scoring"], metadata["categories"]) == ("accuracy", "cluster")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--param", "bogus=1"], "bad --param"),
        (["--param", "estimator=forest"], "estimator must be one of"),
        (["--models", "nobody"], "nobody"),
    ],
)
def test_fit_cli_reports_bad_input(tmp_path, capsys, args, message):
    from router_service.cli.fit import main

    train = _write_json_table(tmp_path / "t.json", n=20)
    rc = main(
        [
            "--strategy",
            "cost_aware",
            "--train",
            str(train),
            "--embedder",
            "hashing-64",
            "--out",
            str(tmp_path / "x.joblib"),
            *args,
        ]
    )
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.joblib").exists()


def test_fit_cli_missing_table(tmp_path, capsys):
    from router_service.cli.fit import main

    assert (
        main(["--strategy", "best_single", "--train", str(tmp_path / "none.json"), "--out", str(tmp_path / "x.joblib")])
        == 2
    )
    assert "none.json" in capsys.readouterr().err
