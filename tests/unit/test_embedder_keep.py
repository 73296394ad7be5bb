"""Which end of a long prompt is embedded is part of a fitted router: recorded, restored, and checked."""

import pytest

from eval.offline import lambda_grid
from router_service.config.service import parse_service_config
from router_service.errors import ConfigError
from router_service.routing.artifact import load_artifact, save_artifact
from router_service.routing.embedding import HashingEmbedder, make_embedder
from router_service.routing.strategies.base import get_strategy
from router_service.serving.assembly import build_strategies

from .helpers import config_dict
from .routing_fixtures import separable_table


def tail_artifact(path):
    fitted = get_strategy("cost_aware").set_embedder(HashingEmbedder(keep="tail")).fit(separable_table())
    return save_artifact(fitted, path)


def test_an_artifact_records_and_restores_the_kept_end(tmp_path):
    path = tail_artifact(tmp_path / "tail.joblib")
    assert load_artifact(path).embedder.keep == "tail"
    head_fitted = get_strategy("cost_aware").set_embedder(HashingEmbedder()).fit(separable_table())
    assert load_artifact(save_artifact(head_fitted, tmp_path / "head.joblib")).embedder.keep == "head"


def test_an_embedder_keeping_the_other_end_is_refused(tmp_path):
    path = tail_artifact(tmp_path / "tail.joblib")
    with pytest.raises(ConfigError, match="tail of long prompts") as err:
        load_artifact(path, embedder=HashingEmbedder())
    assert err.value.code == "artifact_embedder"


def test_the_router_serves_an_artifact_with_the_end_it_was_fitted_on(tmp_path):
    """The router's embedder factory makes head embedders; the artifact's tail wins, and only for it."""
    tail = tail_artifact(tmp_path / "tail.joblib")
    head = save_artifact(
        get_strategy("skill").set_embedder(HashingEmbedder()).fit(separable_table()), tmp_path / "skill.joblib"
    )
    args = config_dict(strategy="cost_aware", artifact=str(tail), extra_artifacts=[str(head)])
    strategies = build_strategies(parse_service_config(args), embedder_factory=lambda name: HashingEmbedder())
    assert strategies["cost_aware"].embedder.keep == "tail"
    assert strategies["skill"].embedder.keep == "head"


def test_unknown_kept_end_is_refused():
    with pytest.raises(ValueError, match="keep"):
        make_embedder("hashing-256", keep="middle")


def test_geometric_lambda_grid_is_dense_at_small_lambda():
    grid = lambda_grid(31, "geometric")
    assert len(grid) == 31 and grid[0] == 0.0 and grid[1] == 0.001 and grid[-1] == 1.0
    assert list(grid) == sorted(grid) and sum(g <= 0.2 for g in grid) > 20
    assert lambda_grid(11) == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    with pytest.raises(ValueError):
        lambda_grid(1)
