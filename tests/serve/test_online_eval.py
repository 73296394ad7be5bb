"""`eval.online` against the real Serve app with fake experts, whose answers are known."""

import json

import pytest

from eval.online import run_online

pytestmark = pytest.mark.serve


def test_online_eval_grades_and_summarises(fake_app, tmp_path):
    dataset = tmp_path / "d.jsonl"
    rows = [
        {"prompt": "please sum", "answer": "[math] please sum", "category": "math"},
        {"prompt": "reverse word", "answer": "[text] reverse word", "category": "text"},
        {"messages": [{"role": "user", "content": "a story"}], "answer": "wrong on purpose", "category": "other"},
    ]
    dataset.write_text("\n".join(json.dumps(r) for r in rows))
    results = run_online(
        f"{fake_app}/v1", dataset, ["coe", "math", "text"], tmp_path / "out", concurrency=2, progress=False
    )
    routed = results["runs"]["coe"]
    assert routed["n"] == 3
    assert routed["accuracy"] == pytest.approx(2 / 3)
    assert routed["per_category"] == {"math": 1.0, "other": 0.0, "text": 1.0}
    assert routed["routed_to"] == {"general": 1, "math": 1, "text": 1}
    assert routed["errors"]["count"] == 0
    assert results["runs"]["math"]["accuracy"] == pytest.approx(1 / 3)
    assert results["oracle"]["accuracy"] == pytest.approx(2 / 3)
    assert (tmp_path / "out" / "report.md").read_text().startswith("# Online eval")


def test_online_eval_counts_errors(fake_app, tmp_path):
    dataset = tmp_path / "d.jsonl"
    dataset.write_text(json.dumps({"prompt": "x", "answer": "y"}))
    results = run_online(f"{fake_app}/v1", dataset, ["no-such-model"], tmp_path / "out", progress=False)
    run = results["runs"]["no-such-model"]
    assert run["errors"]["count"] == 1 and "HTTP 404" in run["errors"]["examples"][0]
