"""The router-trained encoder (zoo.router_encoder) on small synthetic tables: it trains, passes or fails its
gate, and what it writes is an embedder the serving core loads by path, with the weights' hash recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from router_service.data.table import RoutingTable
from router_service.routing.embedding import SentenceTransformerEmbedder
from tests.unit.test_strategies import make_table
from zoo.router_encoder import RECORD, RouterEncoderGateError, train_router_encoder, weights_sha256


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("enc") / "router-encoder"
    table = make_table(240)
    record = train_router_encoder(table, out, epochs=3, batch_size=32, max_seq_length=32, seed=0)
    return table, out, record


def test_the_encoder_routes_at_least_as_well_as_the_best_single_model_and_records_it(trained):
    table, out, record = trained
    saved = json.loads((out / RECORD).read_text())
    assert saved["weights_sha256"] == weights_sha256(out) == record["weights_sha256"]
    assert saved["models"] == table.models
    assert np.asarray(saved["expert_vectors"]).shape == (len(table.models), 384)
    val = saved["validation"]
    assert val["encoder_router"] >= val["best_single"]  # the gate it passed
    assert saved["rows"] == {"train": 216, "validation": 24} and saved["steps"] == 3 * 7
    assert saved["train_seconds"] > 0


def test_the_core_loads_the_encoder_by_path_and_it_differs_from_the_base(trained):
    table, out, _ = trained
    tuned = SentenceTransformerEmbedder(name=str(out)).encode(table.prompts[:8])
    base = SentenceTransformerEmbedder().encode(table.prompts[:8])
    assert tuned.shape == base.shape == (8, 384)
    assert np.allclose(np.linalg.norm(tuned, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(tuned, base, atol=1e-3)  # the top layers were trained


def test_an_encoder_below_its_gate_fails_and_writes_nothing(tmp_path):
    """One model is always right and the others always wrong: the best single model scores 1.0 on the
    held-out prompts. Untrained (0 epochs), the random expert vectors do not route everything to it."""
    base = make_table(60)
    scores = np.zeros_like(base.scores)
    scores[:, 2] = 1.0
    table = RoutingTable(prompts=base.prompts, models=base.models, scores=scores, categories=base.categories)
    with pytest.raises(
        RouterEncoderGateError, match=r"below its gate: .* under the best single model general \(1.0000\)"
    ):
        train_router_encoder(table, tmp_path / "enc", epochs=0, max_seq_length=32, seed=0)
    assert not (tmp_path / "enc").exists()


def test_artifacts_fitted_on_the_encoder_record_its_hash_and_refuse_other_weights(trained, tmp_path):
    """An artifact lives in its encoder's vector space: it records the weights' SHA-256 and will not load
    once the folder holds other weights; the embedding cache keys on the same hash."""
    import shutil

    from router_service.errors import ConfigError
    from router_service.routing.artifact import load_artifact, read_artifact_info, save_artifact
    from router_service.routing.embedding import make_embedder
    from router_service.routing.strategies.base import get_strategy

    table, out, record = trained
    folder = tmp_path / "encoder"
    shutil.copytree(out, folder)
    embedder = make_embedder(str(folder))
    assert embedder.cache_key == f"{folder}@{record['weights_sha256'][:16]}"
    strategy = get_strategy("category").set_embedder(embedder).fit(table)
    path = save_artifact(strategy, tmp_path / "c.joblib")
    assert read_artifact_info(path)["embedder_sha256"] == record["weights_sha256"]
    assert load_artifact(path).embedder.name == str(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")  # "retrained" in place
    with pytest.raises(ConfigError, match="now holds other weights"):
        load_artifact(path)
    assert make_embedder(str(folder)).cache_key != embedder.cache_key
