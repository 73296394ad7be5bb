"""Load RoutingTables from the two on-disk formats, with errors that name the file and the row.

Formats (examples in `../shared/data/routing/`):

* RouterBench CSV (`*.csv`): the prompt in `prompt`, the category in `eval_name`, one score column per
  model, and that model's call cost in `<model>|total_cost`. Empty cells are missing (NaN), never 0.
  `sample_id`, `oracle_model_to_route_to`, `<model>|model_response` and unnamed index columns are
  ignored. RouterBench stores `prompt` as a Python list literal (`"['...']"`); it is unwrapped and its
  parts joined with a newline, so strategies embed the text the model saw, not the list syntax.
* question/scores JSON (`*.json`): a list of `{"question": str, "scores": {model: float},
  "category": str (optional)}`. Without `category`, the category is the file stem with a trailing split
  marker removed (`gsm8k-train` → `gsm8k`, `mmlu_test` → `mmlu`). A model absent from a row, or a null
  score, is missing (NaN).

Rows are numbered from 1 in error messages (the CSV header and the JSON list brackets are not rows).

Costs for tables without them come from a price file `{model: {"input_price": $, "output_price": $}}`
in dollars per million tokens. The estimate per (prompt, model) is

    cost = (input_tokens · input_price + output_tokens · output_price) / 1e6
    input_tokens  = ceil(len(prompt) / 4)            # ≈ 4 characters per token for English text
    output_tokens = ESTIMATED_OUTPUT_TOKENS.get(category, DEFAULT_OUTPUT_TOKENS)

i.e. 256 output tokens for free-form answers (gsm8k reasoning, humaneval/mbpp code) and 16 for the
multiple-choice tasks (an answer letter plus a little chatter). A table that already has costs keeps
them; the price file only fills in tables without costs. Without prices, `costs` is None.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router_service.data.table import RoutingTable

__all__ = [
    "DatasetError",
    "read_jsonl",
    "TableFormatError",
    "load_tables",
    "load_table",
    "load_prices",
    "estimate_costs",
    "estimate_tokens",
    "category_from_stem",
    "ESTIMATED_OUTPUT_TOKENS",
    "DEFAULT_OUTPUT_TOKENS",
    "CHARS_PER_TOKEN",
]

CHARS_PER_TOKEN = 4
DEFAULT_OUTPUT_TOKENS = 16
ESTIMATED_OUTPUT_TOKENS: dict[str, int] = {"gsm8k": 256, "humaneval": 256, "mbpp": 256}

# RouterBench columns that are neither a model's score nor its cost.
_CSV_META_COLUMNS = {"", "sample_id", "prompt", "eval_name", "oracle_model_to_route_to"}
_COST_SUFFIX = "|total_cost"
_SPLIT_MARKER = re.compile(r"[-_.](train|test|dev|val|valid|validation)$", re.IGNORECASE)


class TableFormatError(ValueError):
    """A routing-table or price file that cannot be used; the message names the file (and row)."""


class DatasetError(ValueError):
    """A JSON Lines dataset that cannot be used; the message names the file (and line)."""


def category_from_stem(path: str | Path) -> str:
    """`gsm8k-train.json` → `gsm8k`, `arc_challenge_train.json` → `arc_challenge`."""
    return _SPLIT_MARKER.sub("", Path(path).stem)


# ----------------------------------------------------------------------------------------- prices
def load_prices(path: str | Path) -> dict[str, dict[str, float]]:
    """Read `{model: {"input_price": $, "output_price": $}}` ($ per million tokens), validated."""
    raw = _read_json(path)
    if not isinstance(raw, dict) or not raw:
        raise TableFormatError(f"{path}: a price file must be a non-empty JSON object {{model: {{...}}}}")
    prices: dict[str, dict[str, float]] = {}
    for model, entry in raw.items():
        if not isinstance(entry, dict):
            raise TableFormatError(f"{path}: model '{model}': expected an object with input_price/output_price")
        parsed = {}
        for key in ("input_price", "output_price"):
            value = entry.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise TableFormatError(f"{path}: model '{model}': '{key}' must be a number >= 0, got {value!r}")
            parsed[key] = float(value)
        prices[model] = parsed
    return prices


def estimate_tokens(prompts: Sequence[str], categories: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Estimated (input, output) token counts per prompt; see the module docstring."""
    input_tokens = np.array([math.ceil(len(p) / CHARS_PER_TOKEN) for p in prompts], dtype=np.float64)
    cats = categories if categories is not None else [""] * len(prompts)
    output_tokens = np.array([ESTIMATED_OUTPUT_TOKENS.get(c, DEFAULT_OUTPUT_TOKENS) for c in cats], dtype=np.float64)
    return input_tokens, output_tokens


def estimate_costs(
    prompts: Sequence[str],
    categories: Sequence[str] | None,
    models: Sequence[str],
    prices: Mapping[str, Mapping[str, float]],
    source: str = "prices",
) -> np.ndarray:
    """(n_prompts, n_models) dollar costs from token estimates; see the module docstring."""
    missing = [m for m in models if m not in prices]
    if missing:
        raise TableFormatError(f"{source}: no price for models {missing}")
    input_tokens, output_tokens = estimate_tokens(prompts, categories)
    input_price = np.array([prices[m]["input_price"] for m in models])
    output_price = np.array([prices[m]["output_price"] for m in models])
    return (np.outer(input_tokens, input_price) + np.outer(output_tokens, output_price)) / 1e6


def _resolve_prices(prices: str | Path | Mapping | None) -> tuple[Mapping | None, str]:
    if prices is None or isinstance(prices, Mapping):
        return prices, "prices"
    return load_prices(prices), str(prices)


# ----------------------------------------------------------------------------------------- tables
def load_table(path: str | Path, prices: str | Path | Mapping | None = None) -> RoutingTable:
    """One file → RoutingTable; format chosen by suffix (.csv RouterBench, .json question/scores)."""
    price_table, price_source = _resolve_prices(prices)
    return _load_one(Path(path), price_table, price_source)


def _load_one(path: Path, price_table: Mapping | None, price_source: str) -> RoutingTable:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        table = _load_routerbench_csv(path)
    elif suffix == ".json":
        table = _load_scores_json(path)
    else:
        raise TableFormatError(f"{path}: unknown table format '{suffix}' (expected .csv or .json)")
    if table.costs is None and price_table is not None:
        table.costs = estimate_costs(table.prompts, table.categories, table.models, price_table, price_source)
    return table


def load_tables(
    paths: Sequence[str | Path], prices: str | Path | Mapping | None = None, models: Sequence[str] | None = None
) -> RoutingTable:
    """Concatenate the rows of several files (same models in each, or the `models` subset of all).

    Every file must end up with the same models, in the same order: that of `models` when given,
    else that of the first file. Mixing files with and without costs is an error (pass `prices`).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise TableFormatError("no table files given")
    price_table, price_source = _resolve_prices(prices)  # read once, not once per file
    tables = [_load_one(Path(p), price_table, price_source) for p in paths]
    if models is not None:
        wanted = list(models)
        if len(set(wanted)) != len(wanted):
            raise TableFormatError(f"duplicate names in models: {wanted}")
        hint = ""
    else:
        wanted = list(dict.fromkeys(m for t in tables for m in t.models))  # union, first-seen order
        common = [m for m in wanted if all(m in t.models for t in tables)]
        hint = f" (pick models present in every file with models=/--models, e.g. {','.join(common)})"
    for path, table in zip(paths, tables):
        absent = [m for m in wanted if m not in table.models]
        if absent:
            raise TableFormatError(f"{path}: models {absent} are missing from this file{hint}")
    with_costs = [t.costs is not None for t in tables]
    if any(with_costs) and not all(with_costs):
        without = [str(p) for p, c in zip(paths, with_costs) if not c]
        raise TableFormatError(f"{', '.join(without)}: no costs while other files have them; pass a price file")
    selected = [t.select_models(wanted) for t in tables]
    return RoutingTable.concat(selected)


# ----------------------------------------------------------------------------------------- JSON Lines
def read_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number from 1, parsed value) for each non-blank line of a JSON Lines file.

    The one JSONL reader (eval datasets, benches): an unreadable file, text that is not UTF-8, or a line
    that is not JSON raises DatasetError naming the file (and `file:line`). What a row must hold is
    the caller's to check.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text: {exc}") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{lineno}: not JSON ({exc.msg})") from None


# ----------------------------------------------------------------------------------------- readers
@contextlib.contextmanager
def _reading(path: str | Path) -> Iterator[None]:
    """A file that cannot be read, or is not UTF-8, becomes a TableFormatError naming it."""
    try:
        yield
    except OSError as exc:
        raise TableFormatError(f"{path}: cannot read file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise TableFormatError(f"{path}: not UTF-8 text: {exc}") from None


def _read_json(path: str | Path) -> Any:
    with _reading(path), open(path, encoding="utf-8") as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as exc:
            raise TableFormatError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def _parse_score(value: Any, where: str) -> float:
    """A score in [0, 1], or NaN for a missing one (None / empty cell)."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return math.nan
    if isinstance(value, bool):
        raise TableFormatError(f"{where}: score must be a number in [0, 1], got {value!r}")
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise TableFormatError(f"{where}: score must be a number in [0, 1], got {value!r}") from None
    if math.isnan(score):
        return math.nan
    if not 0.0 <= score <= 1.0:
        raise TableFormatError(f"{where}: score {score} is outside [0, 1]")
    return score


def _parse_cost(value: str, where: str) -> float:
    if value.strip() == "":
        return math.nan
    try:
        cost = float(value)
    except ValueError:
        raise TableFormatError(f"{where}: cost must be a number, got {value!r}") from None
    if not math.isnan(cost) and (cost < 0 or math.isinf(cost)):
        raise TableFormatError(f"{where}: cost must be finite and >= 0, got {cost}")
    return cost


def _unwrap_prompt(raw: str) -> str:
    """RouterBench prompts are list literals like "['text']": return the text itself."""
    text = raw.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            parts = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return raw
        if isinstance(parts, list) and parts and all(isinstance(p, str) for p in parts):
            return "\n".join(parts)
    return raw


def _load_routerbench_csv(path: Path) -> RoutingTable:
    # Few-shot prompts and model responses exceed csv's default 128 KiB field limit.
    csv.field_size_limit(2**31 - 1)
    try:
        with _reading(path), open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise TableFormatError(f"{path}: empty file (no header row)")
            columns = _csv_columns(path, header)
            prompts, categories, scores, costs = [], [], [], []
            for row_number, row in enumerate(reader, start=1):
                if not row:
                    continue  # a blank line, e.g. at the end of the file
                where = f"{path}: row {row_number} (line {reader.line_num})"
                if len(row) != len(header):
                    raise TableFormatError(f"{where}: has {len(row)} fields, the header has {len(header)}")
                prompt = _unwrap_prompt(row[columns["prompt"]])
                if not prompt.strip():
                    raise TableFormatError(f"{where}: empty prompt")
                prompts.append(prompt)
                if columns["eval_name"] is not None and row[columns["eval_name"]].strip():
                    categories.append(row[columns["eval_name"]].strip())
                else:
                    categories.append(category_from_stem(path))
                scores.append([_parse_score(row[i], f"{where}, column '{m}'") for m, i in columns["scores"].items()])
                if columns["costs"]:
                    costs.append(
                        [
                            _parse_cost(row[i], f"{where}, column '{m}{_COST_SUFFIX}'")
                            for m, i in columns["costs"].items()
                        ]
                    )
    except csv.Error as exc:
        raise TableFormatError(f"{path}: malformed CSV: {exc}") from None
    if not prompts:
        raise TableFormatError(f"{path}: no data rows")
    models = list(columns["scores"])
    return RoutingTable(
        prompts=prompts,
        models=models,
        scores=np.array(scores, dtype=np.float64),
        costs=np.array(costs, dtype=np.float64) if costs else None,
        categories=categories,
        sources=[str(path)] * len(prompts),
    )


def _csv_columns(path: Path, header: list[str]) -> dict[str, Any]:
    """Map the header to prompt/category/score/cost column indices, rejecting unusable headers."""
    names = [h.strip() for h in header]
    duplicated = sorted({n for n in names if n and names.count(n) > 1})
    if duplicated:
        raise TableFormatError(f"{path}: duplicated columns {duplicated}")
    if "prompt" not in names:
        raise TableFormatError(f"{path}: no 'prompt' column (RouterBench CSV expected); header: {names[:8]}")
    score_cols = {
        n: i
        for i, n in enumerate(names)
        if n not in _CSV_META_COLUMNS and "|" not in n and not n.startswith("Unnamed:")
    }
    if not score_cols:
        raise TableFormatError(f"{path}: no model score columns")
    cost_cols = {m: names.index(m + _COST_SUFFIX) for m in score_cols if m + _COST_SUFFIX in names}
    if cost_cols and len(cost_cols) != len(score_cols):
        lacking = [m for m in score_cols if m not in cost_cols]
        raise TableFormatError(f"{path}: no '<model>{_COST_SUFFIX}' column for models {lacking}")
    return {
        "prompt": names.index("prompt"),
        "eval_name": names.index("eval_name") if "eval_name" in names else None,
        "scores": score_cols,
        "costs": cost_cols,
    }


def _load_scores_json(path: Path) -> RoutingTable:
    rows = _read_json(path)
    if not isinstance(rows, list):
        raise TableFormatError(f"{path}: expected a JSON list of {{'question', 'scores'}} objects")
    if not rows:
        raise TableFormatError(f"{path}: no rows")
    default_category = category_from_stem(path)
    models: dict[str, int] = {}  # first-seen order
    prompts, categories, row_scores = [], [], []
    for row_number, row in enumerate(rows, start=1):
        where = f"{path}: row {row_number}"
        if not isinstance(row, dict):
            raise TableFormatError(f"{where}: expected an object, got {type(row).__name__}")
        question = row.get("question")
        if not isinstance(question, str) or not question.strip():
            raise TableFormatError(f"{where}: 'question' must be a non-empty string")
        scores = row.get("scores")
        if not isinstance(scores, dict) or not scores:
            raise TableFormatError(f"{where}: 'scores' must be a non-empty object {{model: score}}")
        category = row.get("category", default_category)
        if not isinstance(category, str) or not category.strip():
            raise TableFormatError(f"{where}: 'category' must be a non-empty string")
        parsed = {}
        for model, value in scores.items():
            parsed[model] = _parse_score(value, f"{where}, model '{model}'")
            models.setdefault(model, len(models))
        prompts.append(question)
        categories.append(category)
        row_scores.append(parsed)
    matrix = np.full((len(prompts), len(models)), np.nan)
    for r, parsed in enumerate(row_scores):
        for model, score in parsed.items():
            matrix[r, models[model]] = score
    return RoutingTable(
        prompts=prompts,
        models=list(models),
        scores=matrix,
        costs=None,
        categories=categories,
        sources=[str(path)] * len(prompts),
    )
