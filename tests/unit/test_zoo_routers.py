"""Routers fitted on what was built: artifacts are fitted on the experts' measured quality table, and an
artifact fitted on any other table is refused (and refitted at start-up)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router_service.errors import ConfigError
from zoo.quality import QUALITY_FILE, quality_items, read_quality, write_quality
from zoo.routers import TABLE_FILE, artifact_path, check_routers, fit_routers, quality_rows, table_hash

SKILL_OF = {"math": "arithmetic", "strings": "strings", "units": "units", "atlas": "capitals"}
PRICES = {
    **{e: {"input_price": 0.34, "output_price": 0.34} for e in SKILL_OF},
    "general": {"input_price": 134.5, "output_price": 134.5},
}


def _replies(expert: str, wrong_every: int = 0) -> list[str]:
    """Synthetic replies: a specialist answers its own skill, the generalist the general questions and
    every third skill prompt; `wrong_every` > 0 makes every n-th reply wrong."""
    out = []
    for i, item in enumerate(quality_items()):
        good = (
            (item.category == SKILL_OF.get(expert))
            if expert != "general"
            else (item.category == "general" or i % 3 == 0)
        )
        if wrong_every and i % wrong_every == 0:
            good = False
        out.append(f"It is {item.answers[0]}." if good else "no idea")
    return out


@pytest.fixture()
def built(tmp_path) -> dict[str, Path]:
    dirs = {}
    for expert in [*SKILL_OF, "general"]:
        d = tmp_path / "models" / expert
        d.mkdir(parents=True)
        write_quality(d, expert, _replies(expert))
        dirs[expert] = d
    return dirs


def _embedder():
    from router_service.routing.embedding import make_embedder

    return make_embedder("hashing-256")


def _fit(built, out, **kw):
    return fit_routers(
        built,
        out,
        PRICES,
        params={"category": {"default_expert": "general"}},
        embedder=_embedder(),
        progress=lambda msg: None,
        **kw,
    )


def test_quality_record_grades_with_the_online_eval_rule(built):
    rec = read_quality(built["math"])
    assert rec["grader"] == "contains" and rec["per_category"]["arithmetic"] == 1.0
    assert rec["per_category"]["general"] == 0.0
    general = read_quality(built["general"])
    assert general["per_category"]["general"] == 1.0
    assert len(rec["rows"]) == len(quality_items())


def test_artifacts_are_fitted_on_the_measured_table(built, tmp_path):
    out = tmp_path / "routers"
    paths = _fit(built, out)
    assert set(paths) == {"category", "skill", "cost_aware"}
    digest = check_routers(out, built, PRICES)
    assert digest == table_hash(quality_rows(built), PRICES)
    rows = json.loads((out / TABLE_FILE).read_text())
    assert rows == quality_rows(built)
    from router_service.routing.artifact import load_artifact

    category = load_artifact(paths["category"], _embedder())
    # What the table measured, not what anyone assumed: each skill goes to the expert that solves it.
    assert {c: category.learned_map_[c] for c in ("arithmetic", "strings", "units", "capitals", "general")} == {
        "arithmetic": "math",
        "strings": "strings",
        "units": "units",
        "capitals": "atlas",
        "general": "general",
    }


def test_an_artifact_fitted_on_another_table_is_refused_and_refitted(built, tmp_path):
    out = tmp_path / "routers"
    _fit(built, out)
    before = artifact_path(out, "category").stat().st_mtime_ns
    # The math expert is rebuilt and now measures differently: the old artifacts no longer hold.
    write_quality(built["math"], "math", _replies("math", wrong_every=4))
    with pytest.raises(ConfigError, match=r"category\.joblib was fitted on table \w+, but the experts it serves"):
        check_routers(out, built, PRICES)
    _fit(built, out)  # what start-up does
    assert artifact_path(out, "category").stat().st_mtime_ns != before
    assert check_routers(out, built, PRICES) == table_hash(quality_rows(built), PRICES)


def test_unchanged_table_reuses_the_artifacts(built, tmp_path):
    out = tmp_path / "routers"
    _fit(built, out)
    before = {s: artifact_path(out, s).stat().st_mtime_ns for s in ("category", "skill", "cost_aware")}
    _fit(built, out)
    assert {s: artifact_path(out, s).stat().st_mtime_ns for s in before} == before


def test_a_price_change_is_a_different_table(built, tmp_path):
    out = tmp_path / "routers"
    _fit(built, out)
    dearer = {**PRICES, "math": {"input_price": 9.0, "output_price": 9.0}}
    with pytest.raises(ConfigError, match="fitted on table"):
        check_routers(out, built, dearer)


def test_an_expert_without_a_quality_record_is_named(built, tmp_path):
    (built["atlas"] / QUALITY_FILE).unlink()
    with pytest.raises(ConfigError, match=r"expert 'atlas': no current quality record"):
        _fit(built, tmp_path / "routers")


def test_router_application_fits_at_start_up(built, tmp_path):
    """`deployments.app.prepare_router_app` with a `fit` section: artifacts appear, fitted on the table."""
    from deployments.app import prepare_router_app

    out = tmp_path / "routers"
    args = {
        "router": {
            "strategy": "category",
            "artifact": str(out / "category.joblib"),
            "extra_artifacts": [str(out / "cost_aware.joblib")],
            "default_expert": "general",
            "embedder": "hashing-256",
        },
        "fit": {
            "out_dir": str(out),
            "default_expert": "general",
            "experts": {
                e: {
                    "model": str(d),
                    "cost": {"input_per_mtok": PRICES[e]["input_price"], "output_per_mtok": PRICES[e]["output_price"]},
                }
                for e, d in built.items()
            },
        },
    }
    prepare_router_app(args, base_dir=tmp_path)
    assert check_routers(out, built, PRICES)
