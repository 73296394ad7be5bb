"""Routing-table loaders: both formats, missing cells, categories, prices, model sets, bad files."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from router_service.data.loaders import (
    DEFAULT_OUTPUT_TOKENS,
    DatasetError,
    TableFormatError,
    category_from_stem,
    load_prices,
    load_table,
    load_tables,
    read_jsonl,
)

ROUTING_DIR = (
    Path(os.environ.get("COE_SHARED_DIR", Path(__file__).resolve().parents[2].parent / "shared")) / "data" / "routing"
)

CSV_HEADER = [
    "",
    "sample_id",
    "prompt",
    "eval_name",
    "model-a",
    "org/model-b",
    "model-a|model_response",
    "org/model-b|model_response",
    "model-a|total_cost",
    "org/model-b|total_cost",
    "oracle_model_to_route_to",
]


def write_csv(path: Path, rows: list[list[str]], header: list[str] = CSV_HEADER) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_json(path: Path, payload) -> Path:
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


@pytest.fixture
def routerbench_csv(tmp_path: Path) -> Path:
    return write_csv(
        tmp_path / "arc_challenge_train.csv",
        [
            [
                "0",
                "arc.1",
                "['What is 2+2?\\nA) 3\\nB) 4']",
                "arc-challenge",
                "1.0",
                "0.0",
                "B",
                "A",
                "0.001",
                "0.01",
                "model-a",
            ],
            ["1", "arc.2", "['Second, with a comma']", "arc-challenge", "", "1.0", "", "ok", "", "0.02", "org/model-b"],
            ["2", "wino.1", "plain prompt", "winogrande", "0.5", "1", "x", "y", "0.003", "0.03", "org/model-b"],
        ],
    )


# ----------------------------------------------------------------------------------------- RouterBench CSV
def test_routerbench_csv_scores_costs_categories(routerbench_csv: Path) -> None:
    table = load_table(routerbench_csv)
    assert table.models == ["model-a", "org/model-b"]  # responses, costs, ids and oracle are not models
    assert table.prompts[0] == "What is 2+2?\nA) 3\nB) 4"  # list literal unwrapped, escapes decoded
    assert table.prompts[2] == "plain prompt"
    assert table.categories == ["arc-challenge", "arc-challenge", "winogrande"]
    np.testing.assert_array_equal(table.scores[0], [1.0, 0.0])
    assert math.isnan(table.scores[1, 0])  # empty cell = missing, not 0
    assert math.isnan(table.costs[1, 0])
    np.testing.assert_allclose(table.costs[:, 1], [0.01, 0.02, 0.03])
    assert table.sources == [str(routerbench_csv)] * 3


def test_csv_without_cost_columns_has_no_costs_and_stem_category(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "mbpp_test.csv", [["p1", "1", "0"]], header=["prompt", "m1", "m2"])
    table = load_table(path)
    assert table.costs is None
    assert table.categories == ["mbpp"]


@pytest.mark.parametrize(
    "cell, message", [("yes", "score must be a number"), ("1.5", "outside [0, 1]"), ("-0.1", "outside [0, 1]")]
)
def test_csv_bad_score_names_file_row_and_column(tmp_path: Path, cell: str, message: str) -> None:
    path = write_csv(
        tmp_path / "bad.csv", [["p1", "1", "0"], ["p2", "0", "1"], ["p3", cell, "1"]], header=["prompt", "m1", "m2"]
    )
    with pytest.raises(TableFormatError) as info:
        load_table(path)
    text = str(info.value)
    assert str(path) in text and "row 3" in text and "'m1'" in text and message in text


def test_csv_ragged_row_and_missing_prompt_column(tmp_path: Path) -> None:
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("prompt,m1,m2\np1,1,0\np2,1\n", encoding="utf-8")
    with pytest.raises(TableFormatError, match=r"ragged\.csv: row 2 .*2 fields"):
        load_table(ragged)
    no_prompt = write_csv(tmp_path / "noprompt.csv", [["1", "0"]], header=["m1", "m2"])
    with pytest.raises(TableFormatError, match="no 'prompt' column"):
        load_table(no_prompt)


def test_csv_partial_cost_columns_rejected(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "half.csv", [["p", "1", "0", "0.1"]], header=["prompt", "m1", "m2", "m1|total_cost"])
    with pytest.raises(TableFormatError, match=r"half\.csv: no '<model>\|total_cost' column for models \['m2'\]"):
        load_table(path)


# ----------------------------------------------------------------------------------------- question/scores JSON
def test_scores_json_missing_models_and_null_are_nan(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "gsm8k-train.json",
        [
            {"question": "q1", "scores": {"a": 1.0, "b": 0.25}},
            {"question": "q2", "scores": {"a": None, "b": 0.5}, "cluster_id": 3},
            {"question": "q3", "scores": {"b": 1}, "category": "math"},
        ],
    )
    table = load_table(path)
    assert table.models == ["a", "b"]
    assert table.costs is None
    assert table.categories == ["gsm8k", "gsm8k", "math"]  # explicit category wins over the file stem
    assert math.isnan(table.scores[1, 0]) and math.isnan(table.scores[2, 0])
    np.testing.assert_allclose(table.scores[:, 1], [0.25, 0.5, 1.0])


@pytest.mark.parametrize(
    "stem, category",
    [
        ("gsm8k-train", "gsm8k"),
        ("mmlu_test", "mmlu"),
        ("arc_challenge_train", "arc_challenge"),
        ("humaneval", "humaneval"),
        ("winogrande.dev", "winogrande"),
    ],
)
def test_category_from_stem(stem: str, category: str) -> None:
    assert category_from_stem(f"/x/{stem}.json") == category


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"question": "q"}, "expected a JSON list"),
        (
            [{"question": "q", "scores": {"a": 1}}, {"question": "q2", "scores": {"a": 1.2}}],
            r"row 2, model 'a'.*outside",
        ),
        ([{"question": "q", "scores": {"a": 1}}, {"scores": {"a": 1}}], "row 2: 'question' must be"),
        ([{"question": "q", "scores": {"a": "high"}}], "row 1, model 'a': score must be a number"),
        ([{"question": "q", "scores": {}}], "row 1: 'scores' must be a non-empty object"),
        ([5], "row 1: expected an object"),
        ([], "no rows"),
    ],
)
def test_scores_json_bad_rows(tmp_path: Path, payload, message: str) -> None:
    path = write_json(tmp_path / "mmlu_train.json", payload)
    with pytest.raises(TableFormatError, match=message) as info:
        load_table(path)
    assert str(path) in str(info.value)


def test_invalid_json_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('[{"question": "q", "scores": ', encoding="utf-8")
    with pytest.raises(TableFormatError, match=r"broken\.json: invalid JSON at line 1"):
        load_table(broken)
    with pytest.raises(TableFormatError, match="cannot read file"):
        load_table(tmp_path / "absent.json")
    with pytest.raises(TableFormatError, match="unknown table format"):
        load_table(write_json(tmp_path / "table.txt", []))


# ----------------------------------------------------------------------------------------- prices
def test_prices_give_token_estimated_costs(tmp_path: Path) -> None:
    table_path = write_json(
        tmp_path / "gsm8k-train.json",
        [
            {"question": "x" * 400, "scores": {"a": 1, "b": 0}},
            {"question": "y" * 10, "scores": {"a": 0, "b": 1}, "category": "mmlu"},
        ],
    )
    prices_path = write_json(
        tmp_path / "prices.json",
        {
            "a": {"input_price": 1.0, "output_price": 2.0},
            "b": {"input_price": 0.5, "output_price": 0.5},
            "unused": {"input_price": 9, "output_price": 9},
        },
    )
    table = load_table(table_path, prices=prices_path)
    # 400 chars → 100 input tokens; gsm8k → 256 output tokens. 10 chars → 3 tokens; mmlu → default.
    expected = np.array(
        [
            [(100 * 1.0 + 256 * 2.0) / 1e6, (100 * 0.5 + 256 * 0.5) / 1e6],
            [(3 * 1.0 + DEFAULT_OUTPUT_TOKENS * 2.0) / 1e6, (3 * 0.5 + DEFAULT_OUTPUT_TOKENS * 0.5) / 1e6],
        ]
    )
    np.testing.assert_allclose(table.costs, expected)
    assert load_tables([table_path], prices=load_prices(prices_path)).costs.shape == (2, 2)


def test_price_file_errors(tmp_path: Path) -> None:
    table_path = write_json(tmp_path / "t.json", [{"question": "q", "scores": {"a": 1, "b": 0}}])
    partial = write_json(tmp_path / "partial.json", {"a": {"input_price": 1, "output_price": 1}})
    with pytest.raises(TableFormatError, match=r"partial\.json: no price for models \['b'\]"):
        load_table(table_path, prices=partial)
    negative = write_json(tmp_path / "neg.json", {"a": {"input_price": -1, "output_price": 1}})
    with pytest.raises(TableFormatError, match=r"neg\.json: model 'a': 'input_price' must be a number >= 0"):
        load_prices(negative)


def test_table_with_costs_keeps_them_when_prices_given(routerbench_csv: Path, tmp_path: Path) -> None:
    prices = write_json(
        tmp_path / "p.json",
        {
            "model-a": {"input_price": 100, "output_price": 100},
            "org/model-b": {"input_price": 100, "output_price": 100},
        },
    )
    np.testing.assert_allclose(load_table(routerbench_csv, prices=prices).costs[:, 1], [0.01, 0.02, 0.03])


# ----------------------------------------------------------------------------------------- several files
def test_load_tables_concatenates_rows(tmp_path: Path) -> None:
    first = write_json(tmp_path / "gsm8k-train.json", [{"question": "q1", "scores": {"a": 1, "b": 0}}])
    second = write_json(
        tmp_path / "mmlu_train.json",
        [{"question": "q2", "scores": {"b": 0.5, "a": 0.25}}, {"question": "q3", "scores": {"a": 0, "b": 1}}],
    )
    table = load_tables([first, second])
    assert table.models == ["a", "b"]  # the second file's column order is aligned to the first's
    assert table.prompts == ["q1", "q2", "q3"]
    assert table.categories == ["gsm8k", "mmlu", "mmlu"]
    np.testing.assert_allclose(table.scores, [[1, 0], [0.25, 0.5], [0, 1]])
    assert table.sources == [str(first), str(second), str(second)]


def test_model_missing_from_some_files_is_an_error_unless_subset(tmp_path: Path) -> None:
    first = write_json(tmp_path / "one.json", [{"question": "q1", "scores": {"a": 1, "b": 0, "c": 1}}])
    second = write_json(tmp_path / "two.json", [{"question": "q2", "scores": {"a": 0, "b": 1}}])
    for order in ([first, second], [second, first]):  # whichever file comes first, name the one lacking 'c'
        with pytest.raises(TableFormatError, match=r"two\.json: models \['c'\] are missing.*--models, e\.g\. a,b\)"):
            load_tables(order)
    table = load_tables([first, second], models=["b", "a"])
    assert table.models == ["b", "a"]
    np.testing.assert_allclose(table.scores, [[0, 1], [1, 0]])
    with pytest.raises(TableFormatError, match=r"two\.json: models \['c'\] are missing from this file$"):
        load_tables([first, second], models=["a", "c"])


def test_mixing_files_with_and_without_costs_is_an_error(routerbench_csv: Path, tmp_path: Path) -> None:
    no_cost = write_csv(tmp_path / "nocost.csv", [["p", "1", "0"]], header=["prompt", "model-a", "org/model-b"])
    with pytest.raises(TableFormatError, match=r"nocost\.csv: no costs while other files have them"):
        load_tables([routerbench_csv, no_cost])


# ----------------------------------------------------------------------------------------- the real files
needs_data = pytest.mark.skipif(not ROUTING_DIR.is_dir(), reason=f"shared routing data not found at {ROUTING_DIR}")


@needs_data
def test_real_routerbench_csv_has_missing_cells_and_costs() -> None:
    table = load_table(ROUTING_DIR / "routerbench" / "arc_challenge_train.csv")
    assert len(table) == 1039 and len(table.models) == 11
    assert "gpt-4-1106-preview" in table.models and table.costs is not None
    assert np.isnan(table.scores).any()  # the README: some cells are empty
    assert set(table.categories) == {"arc-challenge"}
    assert not table.prompts[0].startswith("['")


@needs_data
def test_real_model7_json_categories_from_stem() -> None:
    files = [ROUTING_DIR / "model7" / "gsm8k-train.json", ROUTING_DIR / "model7" / "humaneval_train.json"]
    table = load_tables(files)
    assert len(table) == 1115 and len(table.models) == 7
    assert set(table.categories) == {"gsm8k", "humaneval"}
    assert table.costs is None


# ----------------------------------------------------------------------------------------- JSON Lines
def test_read_jsonl_numbers_lines_and_skips_blank_ones(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "answer": "1"}\n\n  \n["not", "an object"]\n', encoding="utf-8")
    assert list(read_jsonl(path)) == [(1, {"prompt": "a", "answer": "1"}), (4, ["not", "an object"])]


def test_read_jsonl_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a"}\n{broken\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"d\.jsonl:2: not JSON"):
        list(read_jsonl(path))
    with pytest.raises(DatasetError, match=r"absent\.jsonl: cannot read"):
        list(read_jsonl(tmp_path / "absent.jsonl"))


def test_eval_and_bench_datasets_use_the_one_reader(tmp_path: Path, monkeypatch) -> None:
    """The online eval, the skill matrix and the overhead bench read JSONL through `read_jsonl`."""
    import importlib.util

    # As when the script runs: its own folder first on sys.path (for bench/bench_machine.py).
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    from eval import online, skill_matrix

    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "2+2", "answer": "4", "category": "math"}\n\n{broken\n', encoding="utf-8")
    spec = importlib.util.spec_from_file_location(
        "router_overhead", Path(__file__).resolve().parents[2] / "bench" / "router_overhead.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for load in (online.load_dataset, skill_matrix.load_dataset, lambda p: bench.load_prompts(p, 4)):
        with pytest.raises(DatasetError, match=r"d\.jsonl:3: not JSON"):
            load(path)
