"""A config's vLLM engine arguments are checked at start-up without importing vLLM (deployments/engine_args.py)."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from deployments.engine_args import engine_arg_names, engine_arg_names_from_source, validate_engine_args
from router_service.errors import ConfigError

from .helpers import heavy_imports_of


def test_names_read_from_source_are_exactly_the_async_engine_args_fields():
    pytest.importorskip("vllm")
    from vllm.engine.arg_utils import AsyncEngineArgs

    assert engine_arg_names() == {f.name for f in dataclasses.fields(AsyncEngineArgs)}


def test_reading_the_names_does_not_import_vllm():
    assert heavy_imports_of("from deployments.engine_args import engine_arg_names; engine_arg_names()") == []


def test_source_reading_skips_class_vars_and_takes_the_subclass_fields(tmp_path):
    source = tmp_path / "arg_utils.py"
    source.write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass
            from typing import ClassVar

            @dataclass
            class EngineArgs:
                model: str = "m"
                dtype: str = "auto"
                registry: ClassVar[dict] = {}

            @dataclass
            class AsyncEngineArgs(EngineArgs):
                enable_log_requests: bool = False
            """
        )
    )
    assert engine_arg_names_from_source(source) == {"model", "dtype", "enable_log_requests"}


def test_an_unexpected_source_layout_gives_no_names(tmp_path):
    source = tmp_path / "arg_utils.py"
    source.write_text("class EngineArgs:\n    model: str = 'm'\n")  # not a dataclass, no AsyncEngineArgs
    assert engine_arg_names_from_source(source) is None
    assert engine_arg_names_from_source(tmp_path / "missing.py") is None


def test_an_unknown_engine_argument_is_refused_naming_the_field():
    pytest.importorskip("vllm")
    validate_engine_args("experts[2].", {"dtype": "float32", "max_model_len": 128, "enforce_eager": True})
    with pytest.raises(ConfigError, match=r"experts\[2\]\.engine\.max_model_length: not a vLLM engine argument"):
        validate_engine_args("experts[2].", {"max_model_length": 128})
    with pytest.raises(ConfigError, match=r"experts\[2\]\.engine\.model: set the model with experts\[2\]\.model"):
        validate_engine_args("experts[2].", {"model": "x"})
